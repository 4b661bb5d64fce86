"""Prediction drift: what the service answered, now against before.

One row per served item: its ranker score (only answers the ranker ranked: `full` and `default_features`;
other rungs' scores are fusion or popularity scores on other scales, left empty), its candidate source, and
its answer's degradation level.

Reference: the serving log's `drift_reference_days` before the current window. The offline scores of the
training set are no reference here: the ranker's inputs include each candidate's fusion and two-tower scores,
which a training-set row does not have. When the log has no earlier window (the first day of serving), the
current window's first half (by request time) is the reference of its second half, and the report says so.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.drift_report import (
    DriftPart,
    column_drifts,
    definition,
    drift_line,
    run,
    sample,
    save,
    skipped,
    value_drift,
)
from recsys.settings import Settings

NAME = "predictions"
STEM = "drift_predictions"
RANKED = ("full", "default_features")  # the rungs whose scores are the ranker's (bento_services Degradation)


def served_items(log: pd.DataFrame) -> pd.DataFrame:
    """One row per served item: score (the ranker's, else empty), source, degradation."""
    lengths = log["item_ids"].map(lambda ids: 0 if ids is None else len(ids)).to_numpy()
    if lengths.sum() == 0:
        return pd.DataFrame({"score": pd.Series(dtype=float), "source": pd.Series(dtype=object),
                             "degradation": pd.Series(dtype=object)})
    scores = np.concatenate([np.asarray(s if s is not None else [], dtype=np.float64)[:n]
                             for s, n in zip(log["scores"], lengths, strict=True)])
    sources = np.concatenate([np.asarray(s if s is not None else [""] * n, dtype=object)[:n]
                              for s, n in zip(log["sources"], lengths, strict=True)])
    degradation = np.repeat(log["degradation"].astype(str).to_numpy(), lengths)
    ranked = np.isin(degradation, RANKED)
    return pd.DataFrame({"score": np.where(ranked, scores, np.nan), "source": sources.astype(str),
                         "degradation": degradation.astype(object)})


def split(log: pd.DataFrame, since: datetime, min_rows: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(reference, current, what the reference is): the log before `since` against the log from it; without
    enough requests before, the current window's first half against its second."""
    times = pd.to_datetime(log["served_at"], utc=True)
    before, after = log[times < pd.Timestamp(since)], log[times >= pd.Timestamp(since)]
    if len(before) >= min_rows or len(after) < 2 * min_rows:
        return before, after, f"the {len(before):,} requests before {since:%Y-%m-%d %H:%M}"
    middle = times[times >= pd.Timestamp(since)].median()
    first, second = after[times[after.index] < middle], after[times[after.index] >= middle]
    return first, second, f"the window's first half ({len(first):,} requests before {middle:%Y-%m-%d %H:%M})"


def prediction_drift(settings: Settings, log: pd.DataFrame, since: datetime, folder: Path) -> DriftPart:
    """Drift of ranker scores, sources and degradation levels served since `since` against before."""
    monitoring = settings.monitoring
    reference_log, current_log, what = split(log, since, monitoring.drift_min_rows)
    if min(len(reference_log), len(current_log)) < monitoring.drift_min_rows:
        return skipped(NAME, f"{len(reference_log):,} requests before the window and {len(current_log):,} in it; "
                             f"each side needs monitoring.drift_min_rows={monitoring.drift_min_rows}")
    reference = sample(served_items(reference_log), monitoring.drift_max_rows)
    current = sample(served_items(current_log), monitoring.drift_max_rows)
    columns = ["source", "degradation"]
    if min(reference["score"].notna().sum(), current["score"].notna().sum()) >= monitoring.drift_min_rows:
        columns.insert(0, "score")
    reference, current = reference[columns], current[columns]
    metrics_list = [value_drift(c, c == "score", monitoring) for c in columns]
    snapshot = run(metrics_list, current, reference, definition(reference, categorical=["source", "degradation"]))
    drifts = column_drifts(snapshot)
    drifted = sum(c.drifted for c in drifts)
    not_ranked = "" if "score" in columns else " (too few ranker scores on a side: scores not compared)"
    line = f"{drift_line(NAME, drifts)} against {what}{not_ranked}"
    metrics = {"drift_share_predictions": drifted / len(drifts), "served_items": float(len(current)),
               "ranked_share": float(current_log["degradation"].isin(RANKED).mean())}
    if "score" in columns:
        metrics["score_mean"] = float(current["score"].mean())
        metrics["score_mean_reference"] = float(reference["score"].mean())
    return DriftPart(NAME, drifted == 0, line, save(snapshot, folder, STEM), metrics, drifts)
