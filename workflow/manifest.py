"""A run's manifest: `data_dir/pipeline/runs/<run_id>/manifest.json`, rewritten (atomically) after every change.

Per step: status (pending, running, completed, skipped, failed, rejected), when it started and ended, wall
seconds, peak memory (the process's resident high-water mark during the step; Spark's JVM is a child process
and is counted apart), inputs, outputs, versions, metrics and a note. Overall: the outcome (running,
published, rejected with reasons, failed at a step) and the run's options (`as_of`, `full`), which a resumed
run keeps.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PENDING, RUNNING, COMPLETED, SKIPPED, FAILED, REJECTED = "pending", "running", "completed", "skipped", "failed", \
    "rejected"
DONE = (COMPLETED, SKIPPED)


def runs_dir(data_path: Path) -> Path:
    return data_path / "pipeline" / "runs"


def new_run_id(now: datetime | None = None) -> str:
    """`YYYYMMDDTHHMMSSZ-xxxx`: sorts by start time; the suffix keeps two runs in one second apart."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


class Manifest:
    """The JSON document of one run, with the few operations the runner needs."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    @classmethod
    def create(cls, folder: Path, run_id: str, steps: list[str], options: dict[str, Any]) -> Manifest:
        folder.mkdir(parents=True, exist_ok=True)
        data = {"run_id": run_id, "created_at": _now(), "options": options,
                "outcome": {"state": "running", "reasons": [], "failed_step": None},
                "attempts": [{"started_at": _now()}],
                "steps": {name: {"status": PENDING} for name in steps}}
        manifest = cls(folder / "manifest.json", data)
        manifest.save()
        return manifest

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls(path, json.loads(path.read_text()))

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.data["options"])

    @property
    def outcome(self) -> dict[str, Any]:
        return dict(self.data["outcome"])

    def step(self, name: str) -> dict[str, Any]:
        return dict(self.data["steps"][name])

    def output(self, step: str, key: str) -> Any:
        """An output a finished step recorded (what later steps, also in a resumed process, build on)."""
        try:
            return self.data["steps"][step]["outputs"][key]
        except KeyError:
            raise KeyError(f"step {step} recorded no output {key!r} in {self.path}") from None

    def update_step(self, name: str, **fields: Any) -> None:
        self.data["steps"][name].update(fields)
        self.save()

    def finish(self, state: str, reasons: list[str] | None = None, failed_step: str | None = None) -> None:
        self.data["outcome"] = {"state": state, "reasons": reasons or [], "failed_step": failed_step,
                                "finished_at": _now()}
        self.save()

    def resume(self, steps: list[str]) -> None:
        """A new attempt: the outcome is running again; steps the pipeline has since gained are pending."""
        self.data["attempts"].append({"started_at": _now()})
        self.data["outcome"] = {"state": "running", "reasons": [], "failed_step": None}
        for name in steps:
            self.data["steps"].setdefault(name, {"status": PENDING})
        self.save()

    def save(self) -> None:
        staged = self.path.with_suffix(".json.tmp")
        staged.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        staged.replace(self.path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
