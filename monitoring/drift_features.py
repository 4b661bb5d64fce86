"""Feature drift: the ranker's feature service as it was trained against the values it was served with.

Reference: the point-in-time training set `recsys training-set` writes (`data_dir/training/<service>.parquet`,
one `view__feature` column per feature of the service, each with a `status__view__feature` twin).
Current: the serving log's sampled `features` (the ranker's input, `{column: [value per ranked candidate]}`),
one row per ranked candidate. Both name features `view__feature` (Feast's full feature names); a log written
with Feast's short `view:feature` form is read as the same column. Columns on one side only are listed in the
report, never compared; the user and item ids are not features.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently.presets import DataDriftPreset

from monitoring.drift_report import (
    DriftPart,
    column_drifts,
    definition,
    drift_line,
    preset_options,
    run,
    sample,
    save,
    skipped,
)
from recsys.errors import InvalidInputError
from recsys.features.service import RANKER_SERVICE
from recsys.settings import Settings

NAME = "features"
STEM = "drift_features"
STATUS_PREFIX = "status__"  # `recsys training-set` writes each feature's present/missing/stale status beside it
IDS = ("user_id", "item_id")


def ranker_reference(home: Path | None = None) -> Path | None:
    """The sample of its training rows the ranker in service (`ranker:latest`) was saved with; None when the model
    store has no ranker or it predates the sample."""
    import bentoml

    from recsys.private.bentoml import model_store
    from training.ranker_train import REFERENCE

    try:
        model = bentoml.models.get("ranker:latest", _model_store=model_store(home))
    except bentoml.exceptions.NotFound:
        return None
    path = Path(model.path_of(REFERENCE))
    return path if path.exists() else None


def training_set_path(settings: Settings, service: str = RANKER_SERVICE) -> Path:
    """Where `recsys training-set` writes the service's training set in `make demo`."""
    return settings.data_path / "training" / f"{service}.parquet"


def reference_features(path: Path) -> pd.DataFrame:
    """The training set's feature columns: those with a status twin (or, without any, the `view__feature` ones)."""
    frame = pd.read_parquet(path)
    features = [c for c in frame.columns if f"{STATUS_PREFIX}{c}" in frame.columns]
    if not features:
        features = [c for c in frame.columns if "__" in c and not c.startswith(STATUS_PREFIX)]
    if not features:
        raise InvalidInputError(f"{path} has no feature columns (`view__feature`); write it with "
                                f"`recsys training-set {path}`")
    return frame[features]


def served_features(log: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """The sampled requests' ranker inputs, one row per ranked candidate, about `rows` rows (whole requests,
    drawn in a seeded order), ids dropped."""
    texts = log["features"].dropna().to_numpy() if "features" in log else np.array([])
    order = np.random.default_rng(seed).permutation(len(texts))
    frames: list[pd.DataFrame] = []
    taken = 0
    for position in order:
        columns: dict[str, list[Any]] = json.loads(texts[position])
        frame = pd.DataFrame({_full_name(k): v for k, v in columns.items() if k not in IDS})
        frames.append(frame)
        taken += len(frame)
        if taken >= rows:
            break
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _full_name(column: str) -> str:
    return column.replace(":", "__", 1) if "__" not in column else column


def align(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """The columns both sides have, the current side cast to the reference's types; then the columns only the
    training set has and those only the log has."""
    shared = [c for c in reference.columns if c in current.columns]
    only_reference = [c for c in reference.columns if c not in current.columns]
    only_served = [c for c in current.columns if c not in reference.columns]
    cast = pd.DataFrame(index=current.index)
    for column in shared:
        values = current[column]
        if pd.api.types.is_numeric_dtype(reference[column]) and not pd.api.types.is_bool_dtype(reference[column]):
            cast[column] = pd.to_numeric(values.map(lambda v: float(v) if isinstance(v, bool) else v),
                                         errors="coerce")
        else:
            cast[column] = values.map(lambda v: None if v is None else str(v)).astype(object)
    return reference[shared], cast, only_reference, only_served


#: The request's calendar: a day's window holds one weekday and its own hours, a training set every one, so
#: they would drift every day by construction; they follow the clock, not the data.
CLOCK = ("request_features__hour_of_day", "request_features__day_of_week", "request_features__is_weekend")


def feature_drift(settings: Settings, log: pd.DataFrame, folder: Path, reference_path: Path) -> DriftPart:
    """Per-feature drift and the share of drifted features, served sample against the training set."""
    monitoring = settings.monitoring
    if not reference_path.exists():
        return skipped(NAME, f"no training set at {reference_path}; write it with `recsys training-set`")
    served = served_features(log, monitoring.drift_max_rows)
    if len(served) < monitoring.drift_min_rows:
        return skipped(NAME, f"{len(served)} served feature rows in the window, fewer than "
                             f"monitoring.drift_min_rows={monitoring.drift_min_rows} (sampled share: "
                             f"monitoring.feature_sample_rate={monitoring.feature_sample_rate})")
    reference, current, only_reference, only_served = align(reference_features(reference_path), served)
    if reference.columns.empty:
        raise InvalidInputError(f"the training set {reference_path} and the serving log share no feature column: "
                                f"the training set has {list(only_reference)[:5]}..., the log "
                                f"{list(only_served)[:5]}...; was it written for another feature service?")
    clock = [c for c in CLOCK if c in reference.columns]
    reference, current = reference.drop(columns=clock), current.drop(columns=clock)
    reference = sample(reference, monitoring.drift_max_rows)
    data = definition(reference)
    snapshot = run([DataDriftPreset(columns=list(reference.columns), **preset_options(monitoring))],
                   current, reference, data)
    columns = column_drifts(snapshot)
    drift_share = sum(c.drifted for c in columns) / len(columns)
    ok = drift_share <= monitoring.drift_share_threshold
    apart = f"; the request's clock ({len(clock)} columns) not compared" if clock else ""
    if only_reference or only_served:
        apart += (f"; not compared: {len(only_reference)} column(s) only in the training set, {len(only_served)} "
                  f"only in the log")
    line = (f"{drift_line(NAME, columns)}: share {drift_share:.2f} "
            f"({'within' if ok else 'over'} {monitoring.drift_share_threshold:.2f}){apart}")
    metrics = {"drift_share": drift_share, "features_compared": float(len(columns)),
               "features_drifted": float(sum(c.drifted for c in columns)),
               "feature_rows_served": float(len(current)), "feature_rows_reference": float(len(reference))}
    return DriftPart(NAME, ok, line, save(snapshot, folder, STEM), metrics, columns)
