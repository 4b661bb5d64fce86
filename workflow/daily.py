"""`recsys pipeline run`: a new run or a resumed one, under the lock, with its manifest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import InvalidInputError
from recsys.settings import Settings
from workflow.lock import PipelineLock
from workflow.manifest import Manifest, new_run_id, runs_dir
from workflow.runner import RunContext, Step, run_steps


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    state: str  # published, rejected, failed
    reasons: list[str]
    manifest: Path


def run_pipeline(settings: Settings, as_of: str | None = None, full: bool = False, resume: str | None = None,
                 import_dir: Path | None = None, progress: Callable[[str], None] = print,
                 steps: list[Step] | None = None) -> RunOutcome:
    """Run the daily pipeline (`workflow.steps.STEPS`), or resume run `resume` from its failed step with the
    options it started with. Raises `PipelineBusyError` when another run holds the lock."""
    from workflow.steps import STEPS

    chosen = steps if steps is not None else STEPS
    names = [step.name for step in chosen]
    folder = runs_dir(settings.data_path)
    run_id = resume or new_run_id()
    with PipelineLock(settings.data_path / "pipeline" / "lock", run_id):
        if resume is not None:
            path = folder / resume / "manifest.json"
            if not path.is_file():
                raise InvalidInputError(f"no pipeline run {resume} under {folder}")
            manifest = Manifest.load(path)
            state = manifest.outcome["state"]
            if state in ("published", "rejected"):
                raise InvalidInputError(f"run {resume} ended {state}; start a new run instead")
            if as_of is not None or full or import_dir is not None:
                raise InvalidInputError("a resumed run keeps the options it started with; give --resume alone")
            manifest.resume(names)
            progress(f"[pipeline] resuming run {resume} ({manifest.path})")
        else:
            options = {"as_of": as_of, "full": full, "import_dir": str(import_dir) if import_dir else None}
            manifest = Manifest.create(folder / run_id, run_id, names, options)
            progress(f"[pipeline] run {run_id} ({manifest.path})")
        state = run_steps(chosen, RunContext(settings, manifest, progress))
    outcome = manifest.outcome
    return RunOutcome(run_id, state, list(outcome["reasons"]), manifest.path)
