"""`recsys monitor drift`: has what the service sees moved away from what it was built on?

Four Evidently reports in today's dated folder (`monitoring.reports.report_dir`), each HTML and JSON:

| file | reference | current |
|---|---|---|
| `drift_features.*` | rows the served ranker trained on (else the training set) | sampled ranker inputs served |
| `drift_predictions.*` | the log's days before the window | scores, sources, degradation served in it |
| `data_quality_events.*` | history before the incoming events | the incoming events |
| `drift_embeddings.*` | the second newest candidate model | the newest one |

and one verdict, `verdicts/drift.json` (`kind="drift"`), not ok when any part crossed its threshold
(`monitoring.*` settings). Its metrics carry each part's headline: `drift_share` (the share of the ranker's
features that drifted), `drift_share_predictions`, `drift_share_events`, `embedding_drift_score`, ..., and
`<part>_ok` (1 or 0) for each part compared. The API's `/metrics` reads them back
(`bento_services.metrics.register_drift_gauge`): `recsys_drift_share{report="features"}` and
`recsys_drift_ok{report=...}`.

The current window is the last `monitoring.drift_window_hours` of the serving log, up to its newest request
(replays carry their request times, so "now" is the log's, not the clock's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from monitoring.drift_embeddings import embedding_drift
from monitoring.drift_events import event_quality
from monitoring.drift_features import feature_drift, ranker_reference, training_set_path
from monitoring.drift_predictions import prediction_drift
from monitoring.drift_report import DriftPart, skipped
from monitoring.reports import Verdict, report_dir, write_verdict
from monitoring.window import report_window
from recsys import serving_log
from recsys.features.service import RANKER_SERVICE
from recsys.settings import Settings

KIND = "drift"


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime


@dataclass(frozen=True)
class DriftRun:
    folder: Path
    verdict: Verdict
    parts: list[DriftPart]


def current_window(settings: Settings, since: datetime | None = None, until: datetime | None = None) -> Window | None:
    """The window compared: `since`..`until` where given, else the last `drift_window_hours` of the log up to
    just after its newest request; None when the log is empty and no end is given."""
    start, end = report_window(settings, since, until, days=settings.monitoring.drift_window_hours / 24)
    return None if start is None or end is None else Window(start, end)


def run_drift(settings: Settings, since: datetime | None = None, until: datetime | None = None,
              reference: Path | None = None, service: str = RANKER_SERVICE, events_since: datetime | None = None,
              progress: Callable[[str], None] = lambda _: None) -> DriftRun:
    """Every drift report, then the verdict; returns where they are and what they found."""
    folder = report_dir(settings)
    window = current_window(settings, since, until)
    parts: list[DriftPart] = []
    if window is None:
        parts += [skipped(name, "the serving log is empty") for name in ("features", "predictions")]
    else:
        earliest = window.since - timedelta(days=settings.monitoring.drift_reference_days)
        log = serving_log.read(settings.lake_path, since=earliest, until=window.until)
        in_window = log[pd.to_datetime(log["served_at"], utc=True) >= pd.Timestamp(window.since)]
        progress(f"feature drift: {len(in_window):,} requests from {window.since:%Y-%m-%d %H:%M}")
        # What the ranker in service was trained on (its saved sample of candidate rows), else the service's
        # training set (`recsys training-set`: rated events, not candidates, so expect more drift against it).
        reference = reference or ranker_reference() or training_set_path(settings, service)
        parts.append(feature_drift(settings, in_window, folder, reference))
        progress("prediction drift")
        parts.append(prediction_drift(settings, log, window.since, folder))
    progress("incoming events")
    parts.append(event_quality(settings, folder, events_since))
    progress("embedding drift")
    parts.append(embedding_drift(settings, folder))
    verdict = verdict_of(parts)
    write_verdict(folder, verdict)
    return DriftRun(folder, verdict, parts)


def verdict_of(parts: list[DriftPart]) -> Verdict:
    """Ok when every part is; the line names what crossed, or says all is within bounds."""
    failed = [p for p in parts if not p.ok]
    compared = [p for p in parts if not p.skipped]
    if failed:
        line = "drift: " + "; ".join(p.line for p in failed)
    elif compared:
        line = f"no drift over thresholds ({', '.join(p.name for p in compared)} compared)"
    else:
        line = "nothing to compare yet: " + "; ".join(p.line for p in parts)
    metrics = {k: v for p in parts for k, v in p.metrics.items()}
    metrics.update({f"{p.name}_ok": float(p.ok) for p in compared})
    return Verdict(KIND, not failed, line, [f for p in parts for f in p.files], metrics)
