"""The pipeline's run machinery with cheap steps: the lock names its holder and dies with it, a failed run resumes
from its failed step, a rejected run publishes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.settings import ROOT_DIR, Settings
from tests.conftest import make_settings
from workflow.daily import run_pipeline
from workflow.lock import PipelineBusyError, PipelineLock
from workflow.runner import Rejected, RunContext, Step, StepResult


def _settings(tmp_path: Path) -> Settings:
    return make_settings("local", tmp_path)


def _quiet(_: str) -> None:
    pass


def test_a_second_run_is_refused_naming_the_holder_and_the_lock_dies_with_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    lock = settings.data_path / "pipeline" / "lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from workflow.lock import PipelineLock\n"
         f"with PipelineLock(Path({str(lock)!r}), 'the-other-run'):\n print('held', flush=True); time.sleep(60)"],
        cwd=ROOT_DIR, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        ran: list[str] = []
        with pytest.raises(PipelineBusyError) as refused:
            run_pipeline(settings, steps=[Step("only", lambda _: ran.append("only") or StepResult())],
                         progress=_quiet)
        assert "run the-other-run" in refused.value.message and f"pid {holder.pid}" in refused.value.message
        assert ran == []
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: no clean-up runs in the holder
        holder.wait()
    with PipelineLock(lock, "next"):  # the OS released it
        assert json.loads(lock.read_text())["run_id"] == "next"


def test_a_failed_run_resumes_from_the_failed_step(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    calls: list[str] = []
    broken = {"second": True}

    def first(context: RunContext) -> StepResult:
        calls.append("first")
        return StepResult(outputs={"made": 41})

    def second(context: RunContext) -> StepResult:
        calls.append("second")
        if broken["second"]:
            raise RuntimeError("the feature store is down")
        return StepResult(outputs={"made": context.output("first", "made") + 1})

    def third(context: RunContext) -> StepResult:
        calls.append("third")
        return StepResult(metrics={"seen": context.output("second", "made")})

    steps = [Step("first", first), Step("second", second), Step("third", third)]
    failed = run_pipeline(settings, steps=steps, progress=_quiet)
    assert failed.state == "failed"
    assert failed.reasons == ["step second failed: RuntimeError: the feature store is down"]
    manifest = json.loads(failed.manifest.read_text())
    assert manifest["outcome"]["failed_step"] == "second"
    assert [s["status"] for s in manifest["steps"].values()] == ["completed", "failed", "pending"]
    assert manifest["steps"]["first"]["seconds"] >= 0 and manifest["steps"]["first"]["peak_rss_mb"] > 0

    broken["second"] = False
    lines: list[str] = []
    resumed = run_pipeline(settings, resume=failed.run_id, steps=steps, progress=lines.append)
    assert resumed.state == "published" and resumed.run_id == failed.run_id
    assert calls == ["first", "second", "second", "third"]  # the completed step was not run again
    manifest = json.loads(resumed.manifest.read_text())
    assert manifest["steps"]["third"]["metrics"] == {"seen": 42} and len(manifest["attempts"]) == 2
    assert any("first: completed in an earlier attempt" in line for line in lines)


def test_a_rejected_run_says_why_and_publishes_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    current = settings.data_path / "models" / "CURRENT"
    current.parent.mkdir(parents=True)
    current.write_text("v-serving")

    def gate(context: RunContext) -> StepResult:
        raise Rejected(["ann_recall@100 0.0100 is below the serving version's 0.4000"])

    def publish(context: RunContext) -> StepResult:
        current.write_text("v-new")
        return StepResult()

    outcome = run_pipeline(settings, steps=[Step("gate", gate), Step("publish", publish)], progress=_quiet)
    assert outcome.state == "rejected" and outcome.reasons[0].startswith("ann_recall@100")
    assert current.read_text() == "v-serving"
    manifest = json.loads(outcome.manifest.read_text())
    assert manifest["steps"]["gate"]["status"] == "rejected" and manifest["steps"]["publish"]["status"] == "pending"
    with pytest.raises(Exception, match="ended rejected"):
        run_pipeline(settings, resume=outcome.run_id, steps=[Step("gate", gate)], progress=_quiet)
