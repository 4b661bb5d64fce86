"""Where reports go and how each says what it found.

Every report of `recsys monitor` and `recsys experiment report` writes into the dated folder of the day it
ran (`settings.reports_path / YYYY-MM-DD`), its files named after what they are (`drift_features.html`,
`experiment_<name>.json`, ...), and one verdict, `verdicts/<kind>.json`: whether the report is within its
thresholds and one line that says what it found. The index page (`recsys monitor build`) reads the newest
verdict of each kind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from recsys.settings import Settings

VERDICTS = "verdicts"


@dataclass(frozen=True)
class Verdict:
    kind: str  # drift, quality, skew, experiment_<name>, ...
    ok: bool  # within every threshold
    line: str  # one sentence a person reads first
    files: list[str] = field(default_factory=list)  # the report's files, relative to the dated folder
    metrics: dict[str, float] = field(default_factory=dict)  # the headline numbers (Prometheus, the index)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def report_dir(settings: Settings, day: datetime | None = None) -> Path:
    """The dated folder of `day` (default today, UTC), created."""
    folder = settings.reports_path / (day or datetime.now(UTC)).strftime("%Y-%m-%d")
    (folder / VERDICTS).mkdir(parents=True, exist_ok=True)
    return folder


def write_verdict(folder: Path, verdict: Verdict) -> Path:
    """Write `verdicts/<kind>.json` in the dated folder (atomically) and return its path."""
    target = folder / VERDICTS / f"{verdict.kind}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(asdict(verdict), indent=2, sort_keys=True))
    temporary.replace(target)
    return target


def latest_verdicts(settings: Settings) -> dict[str, tuple[Path, Verdict]]:
    """The newest verdict of each kind across the dated folders, with the folder it is in."""
    found: dict[str, tuple[Path, Verdict]] = {}
    root = settings.reports_path
    if not root.exists():
        return found
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        for path in sorted((folder / VERDICTS).glob("*.json")):
            verdict = Verdict(**json.loads(path.read_text()))
            if verdict.kind not in found or verdict.created_at > found[verdict.kind][1].created_at:
                found[verdict.kind] = (folder, verdict)
    return found
