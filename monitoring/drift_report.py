"""What the drift reports share: an Evidently run over a reference and a current frame, the per-column verdicts
read back from it, and its two files (HTML for people, Evidently's JSON snapshot for programs).

Each part of `recsys monitor drift` (features, predictions, events, embeddings) returns a `DriftPart`; a part
that has nothing to compare says why and counts as within its thresholds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import ValueDrift

from recsys.settings import MonitoringSettings

VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
FAILED = "FAIL"


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str  # Evidently's name of the stat test, e.g. "Wasserstein distance (normed)"
    threshold: float
    score: float
    drifted: bool


@dataclass(frozen=True)
class DriftPart:
    name: str  # features, predictions, events, embeddings
    ok: bool
    line: str  # what it found, one sentence
    files: list[str] = field(default_factory=list)  # relative to the dated folder
    metrics: dict[str, float] = field(default_factory=dict)
    columns: list[ColumnDrift] = field(default_factory=list)
    skipped: bool = False

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]


def skipped(name: str, why: str) -> DriftPart:
    """A part with nothing to compare: within its thresholds, and the line says what is missing."""
    return DriftPart(name, ok=True, line=f"{name}: not compared ({why})", skipped=True)


def definition(frame: pd.DataFrame, categorical: Sequence[str] = ()) -> DataDefinition:
    """Numerical columns are the numeric dtypes not named categorical; the rest are categorical."""
    wanted = set(categorical)
    cat = [c for c in frame.columns if c in wanted or not pd.api.types.is_numeric_dtype(frame[c])
           or pd.api.types.is_bool_dtype(frame[c])]
    return DataDefinition(numerical_columns=[c for c in frame.columns if c not in cat], categorical_columns=cat)


def run(metrics: list[Any], current: pd.DataFrame, reference: pd.DataFrame, data: DataDefinition) -> Snapshot:
    """One Evidently report over the two frames, tests included (a failed drift test is a drifted column)."""
    report = Report(metrics, include_tests=True)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # Evidently's correlations of constant columns
        return report.run(Dataset.from_pandas(current, data_definition=data),
                          Dataset.from_pandas(reference, data_definition=data))


def value_drift(column: str, numerical: bool, settings: MonitoringSettings) -> ValueDrift:
    """Evidently's drift of one column, with the method and threshold the settings choose (None: Evidently's)."""
    method = settings.drift_num_method if numerical else settings.drift_cat_method
    return ValueDrift(column=column, method=method, threshold=settings.drift_column_threshold)


def preset_options(settings: MonitoringSettings) -> dict[str, Any]:
    """The settings' stat tests and threshold as `DataDriftPreset` / `DriftedColumnsCount` arguments."""
    return {"num_method": settings.drift_num_method, "cat_method": settings.drift_cat_method,
            "threshold": settings.drift_column_threshold, "drift_share": settings.drift_share_threshold}


def column_drifts(snapshot: Snapshot) -> list[ColumnDrift]:
    """Every column a `ValueDrift` looked at: its method, threshold, score, and whether its test failed."""
    content = snapshot.dict()
    scores = {m["id"]: m["value"] for m in content["metrics"]}
    found: dict[str, ColumnDrift] = {}
    for test in content["tests"]:
        config = test.get("metric_config") or {}
        params = config.get("params") or {}
        if params.get("type") != VALUE_DRIFT:
            continue
        column = str(params["column"])
        found[column] = ColumnDrift(column, str(params.get("method")), float(params.get("threshold") or 0.0),
                                    float(scores.get(config.get("metric_id"), np.nan)), test["status"] == FAILED)
    return list(found.values())


def save(snapshot: Snapshot, folder: Path, stem: str) -> list[str]:
    """`<stem>.html` and `<stem>.json` in the dated folder; returns their names."""
    snapshot.save_html(str(folder / f"{stem}.html"))
    snapshot.save_json(str(folder / f"{stem}.json"))
    return [f"{stem}.html", f"{stem}.json"]


def sample(frame: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """At most `rows` rows, a seeded draw so reruns compare the same rows."""
    return frame if len(frame) <= rows else frame.sample(rows, random_state=seed).reset_index(drop=True)


def share(count: int, total: int) -> float:
    return count / total if total else 0.0


def drift_line(name: str, columns: Sequence[ColumnDrift], shown: int = 5) -> str:
    """`3 of 25 drifted (a, b, c)`, the largest scores first among the drifted."""
    drifted = sorted((c for c in columns if c.drifted), key=lambda c: -abs(c.score))
    names = ", ".join(c.column for c in drifted[:shown]) + (", ..." if len(drifted) > shown else "")
    return f"{name}: {len(drifted)} of {len(columns)} drifted" + (f" ({names})" if drifted else "")
