"""The steps of `recsys demo` that show what was built: a sample request, an online feature row, the
simulated day and its reports."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.table import Table

from cli.app import out
from recsys.settings import Settings


def demo_day(settings: Settings) -> None:
    """A simulated day of traffic through the API (an experiment: ranked against shuffled), then every report."""
    from monitoring.demo_day import run_demo_day

    result = run_demo_day(settings, progress=lambda line: out.print(line, markup=False, highlight=False))
    for verdict in result.outcome.verdicts:
        out.print(f"{'OK   ' if verdict.ok else 'ALERT'} {verdict.kind}: {verdict.line}", markup=False, highlight=False)
    out.print(f"reports: {result.outcome.board.path}  (make monitor rebuilds them; see Monitoring in the README)",
              markup=False, highlight=False)


def newest_user(settings: Settings) -> tuple[str, datetime]:
    """The user with the newest snapshot in the user feature table, and that snapshot's time."""
    import pyarrow.dataset as ds

    table = ds.dataset(settings.feature_data_path / "user_features", format="parquet").to_table(
        columns=["user_id", "event_timestamp"]).sort_by([("event_timestamp", "descending")])
    newest = table.column("event_timestamp")[0].as_py()
    return table.column("user_id")[0].as_py(), newest if newest.tzinfo else newest.replace(tzinfo=UTC)


def print_online_sample(settings: Settings, user: str, as_of: datetime) -> None:
    """A few ranker features for one user and three items, read by the fast online path."""
    from recsys.features.online import FastOnlineFeatures
    from recsys.features.store import open_feature_store

    fast = FastOnlineFeatures(open_feature_store(settings), "ranker_v2")
    items = ["1", "318", "2571"]
    values, _ = fast.get(user, items, {"request_time": as_of, "device": "web"})
    table = Table(title=f"ranker_v2 online features of user {user} as of {as_of:%Y-%m-%d} (fast path)")
    table.add_column("feature")
    for item in items:
        table.add_column(f"item {item}", justify="right")
    for name in ("user_features__interactions_total", "item_features__avg_rating", "item_features__category",
                 "user_item_features__user_category_affinity", "user_item_features__item_age_days"):
        table.add_row(name, *[f"{v:.2f}" if isinstance(v, float) else str(v) for v in values[name]])
    out.print(table)


def sample_request(settings: Settings, user: str) -> None:
    """One GET /recommendations through the real app in process, printed as a client would see it."""
    import json

    from fastapi.testclient import TestClient

    from bento_services.api.http import app_from_settings

    key = settings.serving.api_keys[0].get_secret_value()
    with TestClient(app_from_settings(settings)) as client:
        path = f"/recommendations?user_id={user}&n=5&device=web"
        answer = client.get(path, headers={"X-API-Key": key})
    out.print(f"GET {path}  (X-API-Key: …)")
    out.print(f"{answer.status_code}  X-Experiment: {answer.headers.get('x-experiment')}  "
              f"X-Model-Version: {answer.headers.get('x-model-version')}  "
              f"X-Degradation: {answer.headers.get('x-degradation')}")
    out.print_json(json.dumps(answer.json()))
    out.print("serve it: make serve   (then curl -H 'X-API-Key: dev-key' "
              f"'http://{settings.serving.host}:{settings.serving.port}/recommendations?user_id={user}&n=10')")
