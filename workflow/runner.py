"""Running the steps of a pipeline in order, recording each in the manifest, resuming a failed run.

A step is a function of the `RunContext` returning a `StepResult`. It raises `Rejected` to end the run as
rejected (the gate), any other exception to end it as failed at that step; an optional step that fails is
recorded and the run goes on. A resumed run skips the steps its manifest has as completed or skipped.
"""

from __future__ import annotations

import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.settings import Settings
from workflow.manifest import COMPLETED, DONE, FAILED, REJECTED, RUNNING, SKIPPED, Manifest


@dataclass
class StepResult:
    outputs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    skipped: bool = False  # nothing to do (e.g. no lake day changed): recorded as skipped, not completed


class Rejected(Exception):  # noqa: N818 - an outcome, not an error of the program
    """The step judged the run unfit to publish; `reasons` say why."""

    def __init__(self, reasons: list[str], result: StepResult | None = None) -> None:
        super().__init__("; ".join(reasons))
        self.reasons, self.result = reasons, result or StepResult()


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[RunContext], StepResult]
    optional: bool = False  # a failure is recorded and the run goes on


@dataclass
class RunContext:
    settings: Settings
    manifest: Manifest
    progress: Callable[[str], None]

    @property
    def run_dir(self) -> Path:
        return self.manifest.folder

    @property
    def as_of(self) -> datetime:
        return datetime.fromisoformat(self.manifest.output("lake", "as_of"))

    def output(self, step: str, key: str) -> Any:
        return self.manifest.output(step, key)


def run_steps(steps: list[Step], context: RunContext, published_state: str = "published") -> str:
    """Run every step not yet done; returns the outcome's state (published, rejected or failed)."""
    manifest, progress = context.manifest, context.progress
    for position, step in enumerate(steps, start=1):
        label = f"[{position}/{len(steps)}] {step.name}"
        status = manifest.step(step.name)["status"]
        if status in DONE:
            progress(f"{label}: {status} in an earlier attempt, not run again")
            continue
        progress(f"{label}: started")
        manifest.update_step(step.name, status=RUNNING, started_at=_now(), error=None)
        _reset_peak()
        started = time.perf_counter()
        try:
            result = step.run(context)
        except Rejected as rejected:
            _record(manifest, step.name, REJECTED, started, rejected.result)
            progress(f"{label}: rejected: {'; '.join(rejected.reasons)}")
            manifest.finish("rejected", rejected.reasons)
            return "rejected"
        except Exception as exc:  # noqa: BLE001 - the manifest records any failure; the run can resume from it
            detail = f"{type(exc).__name__}: {exc}"
            _record(manifest, step.name, FAILED, started, StepResult(), error=detail,
                    traceback=traceback.format_exc()[-4000:])
            progress(f"{label}: failed after {time.perf_counter() - started:.1f}s: {detail}")
            if step.optional:
                continue
            manifest.finish("failed", [f"step {step.name} failed: {detail}"], failed_step=step.name)
            return "failed"
        _record(manifest, step.name, SKIPPED if result.skipped else COMPLETED, started, result)
        seconds = manifest.step(step.name)["seconds"]
        progress(f"{label}: {'skipped' if result.skipped else 'done'} in {seconds:.1f}s"
                 + (f" ({result.note})" if result.note else ""))
    manifest.finish(published_state)
    return published_state


def _record(manifest: Manifest, name: str, status: str, started: float, result: StepResult, **extra: Any) -> None:
    manifest.update_step(name, status=status, finished_at=_now(), seconds=round(time.perf_counter() - started, 3),
                         peak_rss_mb=_peak_mb(), children_peak_rss_mb=_children_peak_mb(), inputs=result.inputs,
                         outputs=result.outputs, versions=result.versions, metrics=result.metrics, note=result.note,
                         **extra)


def _reset_peak() -> None:
    """Linux: reset the process's resident high-water mark (VmHWM), so the next reading is this step's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the reading is then the process's peak so far
        pass


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _children_peak_mb() -> float:
    """The largest peak of the child processes waited for so far (Spark's JVM once it has exited)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
