"""Batch recommendations through the same pipeline: files for evaluation, and the precompute job.

`recommend_batch` asks the pipeline for each user, skipping layer 1 (a batch must compute, not read
back its own last answers); `precompute` writes the lists to every layer-1 store (Redis with its TTL
in `services`, and the catalog's `precomputed_recommendations` table in both profiles).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bento_services.pipeline.contracts import RecommendationRequest
from bento_services.pipeline.pipeline import RecommendationPipeline
from bento_services.pipeline.stages import DEFAULT_BUDGETS_MS
from recsys.backends import open_lake
from recsys.errors import InvalidInputError
from recsys.progress import progress
from recsys.settings import Settings
from recsys.stores.catalog import Recommendation

COLUMNS = ("user_id", "rank", "item_id", "score", "source", "explanation", "degradation", "variant",
           "model_version")
FORMATS = (".csv", ".parquet")
#: A batch job computes; it has no client waiting, so its stages get a generous budget.
BATCH_STAGE_TIMEOUT_MS = 30_000.0
#: Rungs that mean "we could not compute a list": never written to layer 1 as if they were one.
NOT_COMPUTED = ("precomputed", "popular", "cold_start")


def batch_settings(settings: Settings) -> Settings:
    """The settings with every stage budget raised to BATCH_STAGE_TIMEOUT_MS, for batch jobs."""
    budgets = {stage: max(ms, BATCH_STAGE_TIMEOUT_MS) for stage, ms in settings.serving.stage_timeout_ms.items()}
    for stage in (*DEFAULT_BUDGETS_MS, "candidates", "features", "ranking"):
        budgets.setdefault(stage, BATCH_STAGE_TIMEOUT_MS)
    serving = settings.serving.model_copy(update={"stage_timeout_ms": budgets})
    return settings.model_copy(update={"serving": serving})


def recommend_batch(pipeline: RecommendationPipeline, users: Iterable[str], k: int,
                    show_progress: bool = False, as_of: datetime | None = None) -> pd.DataFrame:
    """One row per (user, rank); users the catalog does not know get their cold-start rows. `as_of` is the
    request time every list is computed at (replays and backfills); None is now."""
    wanted = list(dict.fromkeys(str(u) for u in users))
    rows: list[tuple[object, ...]] = []
    with progress("recommending", total=len(wanted), enabled=show_progress) as advance:
        for user_id in wanted:
            answer = pipeline.recommend(RecommendationRequest(user_id, n=k, at=as_of), use_precomputed=False)
            rows += [(user_id, item.rank, item.item_id, item.score, item.source, item.explanation,
                      answer.degradation.value, answer.variant, answer.model_version) for item in answer.items]
            advance(1)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"rank": "int64", "score": "float64"})


def write_recommendations(frame: pd.DataFrame, out: Path) -> Path:
    """CSV or Parquet, chosen by the file's suffix; written whole or not at all."""
    if out.suffix not in FORMATS:
        raise InvalidInputError(f"cannot write recommendations to {out}: the name must end in .csv or .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")
    if out.suffix == ".csv":
        frame.to_csv(staging, index=False)
    else:
        frame.to_parquet(staging, index=False)
    staging.replace(out)
    return out


def read_users(path: Path) -> list[str]:
    """User ids from a file: one per line (.txt), or a `user_id` column (.csv, .parquet)."""
    if not path.is_file():
        raise InvalidInputError(f"users file {path} does not exist")
    if path.suffix in FORMATS:
        frame = pd.read_csv(path, dtype=str) if path.suffix == ".csv" else pd.read_parquet(path)
        if "user_id" not in frame:
            raise InvalidInputError(f"users file {path} has no user_id column")
        return [str(u) for u in frame["user_id"].dropna()]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def parse_as_of(value: str | None, settings: Settings) -> datetime | None:
    """`--as-of`: None (now), `data-end` (just after the lake's newest event: a replay of data that ended in
    the past) or an ISO 8601 time (UTC when it names no zone)."""
    if value is None:
        return None
    if value == "data-end":
        events = open_lake(settings).interactions(columns=["event_time"]).to_pandas()
        if events.empty:
            raise InvalidInputError("--as-of data-end: the lake has no interactions")
        return (events["event_time"].max() + pd.Timedelta(seconds=1)).to_pydatetime()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(f"--as-of {value!r} is neither 'data-end' nor an ISO 8601 time "
                                "(2018-09-24T12:00:00)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def active_users(settings: Settings, since_days: int | None = None, most: int | None = None) -> list[str]:
    """Users with events in the lake (within `since_days` of the newest event, when given), sorted; `most`: only
    that many, the most recently active."""
    events = open_lake(settings).interactions(columns=["user_id", "event_time"]).to_pandas()
    if since_days is not None and len(events):
        events = events[events["event_time"] >= events["event_time"].max() - pd.Timedelta(days=since_days)]
    if most is not None:
        last = events.groupby("user_id", sort=False)["event_time"].max()
        return sorted(str(u) for u in last.sort_values(ascending=False, kind="stable").index[:most])
    return sorted(str(u) for u in events["user_id"].unique())


def precompute(pipeline: RecommendationPipeline, users: Sequence[str], k: int, show_progress: bool = False,
               computed_at: datetime | None = None, as_of: datetime | None = None) -> int:
    """Compute each user's top `k` (at request time `as_of`, None is now) and write it to every layer-1
    store, expiring its TTL after `computed_at`; returns users written."""
    frame = recommend_batch(pipeline, users, k, show_progress, as_of)
    frame = frame[~frame["degradation"].isin(NOT_COMPUTED)]
    lists = {
        str(user_id): [Recommendation(str(r.item_id), int(r.rank), float(r.score), str(r.explanation))
                       for r in group.itertuples(index=False)]
        for user_id, group in frame.groupby("user_id", sort=False)
    }
    moment = computed_at or datetime.now(UTC)
    for store in pipeline.layer1:
        store.put_many(lists, moment)
    return len(lists)
