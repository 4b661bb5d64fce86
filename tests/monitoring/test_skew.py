"""Train/serve skew: the ranker's input logged by the real online path (materialized features through the
pipeline's assembler), recomputed point in time through Feast. Clean, the report says so; an online store that
holds other values for one feature than the offline tables is reported for that feature alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import cli.monitor_quality  # noqa: F401 - registers `recsys monitor quality` and `skew`
from bento_services.pipeline.contracts import RequestContext
from bento_services.pipeline.features import open_assembler
from cli.app import app
from ingestion.features.materialize import materialize
from monitoring.skew import compare, skew_report
from recsys import serving_log
from recsys.features.service import RANKER_SERVICE
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import Settings
from tests.conftest import make_settings, own_feature_repo
from tests.features.tables import item_rows, user_rows, write_empty_extras, write_table

DAY = datetime(2026, 3, 1, tzinfo=UTC)
SERVED = DAY + timedelta(hours=3)
USERS = [f"u{n}" for n in range(4)]
ITEMS = [f"i{n}" for n in range(12)]
PLANTED = "item_features__avg_rating"


def feature_world(tmp_path: Path) -> Settings:
    """Feature tables with values that differ per user and item, applied and materialized as of DAY."""
    settings = own_feature_repo(make_settings("local", tmp_path), tmp_path)
    write_table(settings, "user_features", [user_rows(u, DAY, created_timestamp=DAY, interactions_total=10 + n,
                                                      avg_rating_given=3.0 + n / 4) for n, u in enumerate(USERS)])
    write_table(settings, "item_features", [item_rows(i, DAY, created_timestamp=DAY, avg_rating=2.5 + n / 10,
                                                      category=f"c{n % 3}", interactions_30d=n * 3)
                                            for n, i in enumerate(ITEMS)])
    write_empty_extras(settings)
    apply_repo(settings)
    materialize(open_feature_store(settings), end=DAY + timedelta(seconds=1))
    return settings


def plant_online_avg_rating(settings: Settings, shift: float) -> None:
    """The online store gets other `avg_rating` values than the offline tables hold (as a buggy writer would)."""
    store = open_feature_store(settings)
    rows = pd.DataFrame([item_rows(i, DAY, created_timestamp=DAY, avg_rating=2.5 + n / 10 + shift,
                                   category=f"c{n % 3}", interactions_30d=n * 3) for n, i in enumerate(ITEMS)])
    for column in ("event_timestamp", "created_timestamp", "first_seen_at"):
        rows[column] = pd.to_datetime(rows[column], utc=True)
    store.write_to_online_store("item_features", rows)


def serve(settings: Settings, requests: int = 8) -> None:
    """Sampled answers as the pipeline logs them: the assembler's features of each request's candidates."""
    assembler = open_assembler(settings, RANKER_SERVICE)
    assert assembler is not None
    records = []
    try:
        for n in range(requests):
            at = SERVED + timedelta(minutes=n)
            user, items = USERS[n % len(USERS)], ITEMS[n % 3:][:8]
            features, _ = assembler.assemble(user, items, RequestContext(device=["ios", "web"][n % 2]), at)
            records.append({"request_id": f"r{n}", "served_at": int(at.timestamp() * 1000), "user_id": user,
                            "variant": "control", "bucket": 1, "model_version": "ranker-1",
                            "candidates_version": "c1", "degradation": "full", "cached": False,
                            "latency_ms": 5.0, "stage_ms": {"total": 5.0}, "item_ids": items,
                            "scores": [1.0] * len(items), "sources": ["collaborative"] * len(items),
                            "explanations": ["similar_users"] * len(items),
                            "features": serving_log.features_json(features) if n % 4 else None})
    finally:
        assembler.close()
    serving_log.write(settings.lake_path, records)


def test_served_features_recomputed_point_in_time_match(tmp_path: Path) -> None:
    settings = feature_world(tmp_path)
    serve(settings)
    folder, verdict = skew_report(settings, SERVED - timedelta(hours=1), SERVED + timedelta(hours=1))
    details = json.loads((folder / "skew.json").read_text())
    assert verdict.ok, verdict.line
    assert details["service"] == RANKER_SERVICE and details["requests"] == 6  # every fourth answer is unsampled
    features = {f["feature"]: f for f in details["features"]}
    assert PLANTED in features and "item_features__category" in features and len(features) > 20
    assert all(f["mismatches"] == 0 and f["compared"] == details["rows"] for f in features.values())
    assert (folder / "skew.html").stat().st_size > 1000 and verdict.files == ["skew.html", "skew.json"]


def test_a_feature_the_online_store_holds_differently_is_reported(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = feature_world(tmp_path)
    plant_online_avg_rating(settings, shift=0.5)
    serve(settings)
    folder, verdict = skew_report(settings, SERVED - timedelta(hours=1), SERVED + timedelta(hours=1))
    details = json.loads((folder / "skew.json").read_text())
    assert not verdict.ok and PLANTED in verdict.line
    worst, *rest = details["features"]
    assert worst["feature"] == PLANTED and worst["share"] == 1.0
    assert worst["largest_difference"] == pytest.approx(0.5)
    assert worst["examples"][0]["served"] == pytest.approx(worst["examples"][0]["offline"] + 0.5)
    assert all(f["mismatches"] == 0 for f in rest)
    assert verdict.metrics["skew_features_above"] == 1.0
    assert PLANTED in (folder / "skew.html").read_text()
    # The command says the same and exits 1 (the log's newest answer closes its default window).
    for name, value in [("RECSYS_PROFILE", "local"), ("RECSYS_DATA_DIR", str(settings.data_path)),
                        ("RECSYS_FEATURES__REPO_PATH", str(settings.features.repo_path)),
                        ("RECSYS_FEATURES__PROJECT", settings.features.project)]:
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["monitor", "skew"])
    assert result.exit_code == 1 and PLANTED in result.output and str(folder) in result.output.replace("\n", "")


def test_numbers_match_within_the_tolerance_and_other_values_exactly() -> None:
    served = pd.DataFrame({"request_id": "r", "user_id": "u", "item_id": ["a", "b", "c", "d"],
                           "x": [1.0, 2.0, None, 5.0], "s": ["p", "q", None, "r"], "l": [[1.0], [2.0], [], [3.0]]})
    offline = pd.DataFrame({"x": [1.00001, 2.5, None, None], "s": ["p", "Q", None, "r"],
                            "l": [[1.0], [2.0], [], [3.1]]})
    found = {s.feature: s for s in compare(served, offline, ["x", "s", "l"], tolerance=1e-4)}
    assert (found["x"].mismatches, found["s"].mismatches, found["l"].mismatches) == (2, 1, 1)
    assert found["x"].largest_difference == pytest.approx(0.5)
    assert [e["item_id"] for e in found["x"].examples] == ["d", "b"]  # a value against a missing one first
