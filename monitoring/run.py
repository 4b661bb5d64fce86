"""Every report at once, then the index page: what `recsys monitor all`, `make monitor` and the demo run.

Each report is run on its own: one that fails (a bug, a missing input) is recorded as an ALERT verdict with
the error, and the others still run, so the index page always says what is known.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from monitoring.board import Board
from monitoring.board import build as build_board
from monitoring.reports import Verdict, report_dir, write_verdict
from recsys.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    verdicts: list[Verdict]
    board: Board

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def experiments_of(settings: Settings) -> list[str]:
    """The experiments the settings define (the `experiment` of their variants), in order."""
    return list(dict.fromkeys(v.experiment for v in settings.serving.experiments))


def run_all(settings: Settings, since: datetime | None = None, until: datetime | None = None,
            progress: Callable[[str], None] = lambda _: None) -> Outcome:
    """Drift, quality, skew and each experiment's report over the window, then the index page."""
    from monitoring.drift import run_drift
    from monitoring.experiment_report import report as experiment_report
    from monitoring.quality import quality_report
    from monitoring.skew import skew_report

    steps: list[tuple[str, Callable[[], Verdict]]] = [
        ("drift", lambda: run_drift(settings, since, until, progress=progress).verdict),
        ("quality", lambda: quality_report(settings, since, until)[1]),
        ("skew", lambda: skew_report(settings, since, until)[1]),
    ]
    for name in experiments_of(settings):
        steps.append((f"experiment_{name}",
                      lambda name=name: experiment_report(settings, name, since, until)[1]))  # type: ignore[misc]
    verdicts = []
    for kind, step in steps:
        progress(f"report: {kind}")
        try:
            verdicts.append(step())
        except Exception as exc:  # noqa: BLE001 - one broken report must not hide the others
            log.error("report %s failed:\n%s", kind, traceback.format_exc())
            verdicts.append(_failed(settings, kind, exc))
    return Outcome(verdicts, build_board(settings))


def _failed(settings: Settings, kind: str, exc: Exception) -> Verdict:
    verdict = Verdict(kind=kind, ok=False, line=f"the report failed: {type(exc).__name__}: {exc}"[:300])
    write_verdict(report_dir(settings), verdict)
    return verdict


def index_path(settings: Settings) -> Path:
    return settings.reports_path / "index.html"
