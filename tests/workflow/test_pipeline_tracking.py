"""What the pipeline adds to experiment tracking after training: the gate's held-out metrics and verdict on both
runs of a version, and each release change as the `release` tag of the versions it concerns. Cheap stand-ins for
the evaluation and the probe; a real MLflow store in the test's folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from recsys.release import Version
from recsys.settings import Settings
from tests.conftest import make_settings
from training.tracking import RunRecord, Tracked, find_run, list_versions, track
from workflow.manifest import Manifest
from workflow.release import promote, publish, rollback
from workflow.runner import Rejected, RunContext
from workflow.steps import gate_step

A, B, C = Version("two-tower-a", "ra"), Version("two-tower-b", "rb"), Version("two-tower-c", "rc")


def _quiet(_: str) -> None:
    pass


def _recorded(settings: Settings, version: Version) -> tuple[Tracked, Tracked]:
    """The two runs a pipeline run records for `version`; its folder (what a release needs to make it stable)."""
    (settings.data_path / "models" / version.candidates / "item_index").mkdir(parents=True)
    two_tower = track(settings, RunRecord("two-tower", version.candidates, f"models/{version.candidates}"), _quiet)
    ranker = track(settings, RunRecord("ranker", str(version.ranker), f"ranker:{version.ranker}"), _quiet)
    assert two_tower is not None and ranker is not None
    return two_tower, ranker


def _release_tags(settings: Settings, version: Version) -> tuple[str | None, str | None]:
    """The `release` tag of the version's two-tower run and of its registered ranker version."""
    two_tower, ranker = find_run(settings, "two-tower", version.candidates), find_run(settings, "ranker",
                                                                                      str(version.ranker))
    assert two_tower is not None and ranker is not None
    registered = {v.version: v.tags for v in list_versions(settings, "ranker")}[str(ranker.model_version)]
    return MlflowClient(settings.tracking_uri).get_run(two_tower.run_id).data.tags.get("release"), \
        registered.get("release")


def test_each_release_change_tags_the_runs_of_the_versions_it_concerns(tmp_path: Path) -> None:
    settings = make_settings("local", tmp_path)
    for version in (A, B):
        _recorded(settings, version)
    (settings.data_path / "models" / C.candidates / "item_index").mkdir(parents=True)  # C: no run recorded

    publish(settings, A, 5, None, _quiet)
    assert _release_tags(settings, A) == ("stable", "stable")
    publish(settings, B, 5, A, _quiet)
    assert _release_tags(settings, B) == ("canary 5%", "canary 5%")
    promote(settings, progress=_quiet)
    promote(settings, progress=_quiet)
    assert (_release_tags(settings, A), _release_tags(settings, B)) == (("retired", "retired"), ("stable", "stable"))
    publish(settings, C, 5, B, _quiet)  # a version no run recorded: nothing to tag, the release goes on
    rollback(settings, progress=_quiet)
    rollback(settings, progress=_quiet)  # no canary: back to A
    assert (_release_tags(settings, A), _release_tags(settings, B)) == (("stable", "stable"),
                                                                        ("rolled back", "rolled back"))


def _gate_context(settings: Settings, tmp_path: Path, runs: tuple[Tracked, Tracked] | None,
                  monkeypatch: pytest.MonkeyPatch) -> RunContext:
    """A run whose earlier steps are recorded in its manifest and whose new version lost ANN recall against the
    serving one; the held-out day, index check and latency probe are stand-ins."""
    manifest = Manifest.create(tmp_path / "run", "run-1", ["lake", "candidates", "ranker", "evaluate", "gate"], {})
    k = settings.pipeline.k
    serving = {f"ann_recall@{k}": 0.5, f"candidate_recall@{k}": 0.5, "candidate_ndcg@10": 0.3, "ndcg@10": 0.3}
    evaluation = {"held_out_day": "2024-01-08T00:00:00+00:00", "users": 1,
                  "new": {"version": A.candidates, "metrics": serving | {f"ann_recall@{k}": 0.1}},
                  "serving": {"version": B.candidates, "metrics": serving}, "popularity": {"ndcg@10": 0.1}}
    (manifest.folder / "evaluation.json").write_text(json.dumps(evaluation))
    outputs: dict[str, dict[str, Any]] = {
        "lake": {"as_of": "2024-01-09T00:00:00+00:00"},
        "candidates": {"folder": str(tmp_path / A.candidates), "mlflow_run_id": runs[0].run_id if runs else None,
                       "mlflow_version": runs[0].model_version if runs else None},
        "ranker": {"mlflow_run_id": runs[1].run_id if runs else None,
                   "mlflow_version": runs[1].model_version if runs else None},
        "evaluate": {"evaluation": str(manifest.folder / "evaluation.json")}}
    for step, recorded in outputs.items():
        manifest.update_step(step, status="completed", outputs=recorded)
    history = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_time": [datetime(2024, 1, 7, tzinfo=UTC)]})
    monkeypatch.setattr("workflow.evaluate.held_out_day", lambda lake, as_of: (datetime(2024, 1, 8), history))
    monkeypatch.setattr("workflow.evaluate.day_holdout",
                        lambda frame, start, users: SimpleNamespace(relevant={"u1": {"i2"}}, history=history))
    monkeypatch.setattr("workflow.gate.index_answers", lambda settings, folder, items: None)
    monkeypatch.setattr("workflow.gate.latency_probe", lambda *args: {"p99_ms": 12.0, "errors": 0.0,
                                                                      "requests": 5.0})
    monkeypatch.setattr("workflow.steps._run_ranker", lambda context: None)
    return RunContext(settings, manifest, _quiet)


def test_the_gate_records_the_held_out_metrics_and_its_verdict_on_both_runs(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("local", tmp_path)
    runs = _recorded(settings, A)

    with pytest.raises(Rejected) as rejected:
        gate_step(_gate_context(settings, tmp_path, runs, monkeypatch))

    [reason] = rejected.value.reasons
    assert reason.startswith(f"ann_recall@{settings.pipeline.k} ")
    client = MlflowClient(settings.tracking_uri)
    for tracked, kind in zip(runs, ("two-tower", "ranker"), strict=True):
        run = client.get_run(tracked.run_id).data
        assert (run.tags["gate"], run.tags["gate_reasons"], run.tags["gate_compared_with"]) == (
            "rejected", reason, B.candidates)
        k = settings.pipeline.k
        assert run.metrics[f"heldout/new/ann_recall_at_{k}"] == 0.1
        assert run.metrics[f"heldout/serving/ann_recall_at_{k}"] == 0.5
        assert run.metrics["heldout/popularity/ndcg_at_10"] == 0.1 and run.metrics["gate/latency/p99_ms"] == 12.0
        assert client.get_model_version(kind, str(tracked.model_version)).tags["gate"] == "rejected"


def test_a_tracking_store_that_fails_leaves_the_gate_its_verdict(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("local", tmp_path)
    broken = settings.model_copy(update={"tracking": settings.tracking.model_copy(update={
        "uri": "http://127.0.0.1:9", "http_timeout_s": 1, "http_retries": 0})})
    runs = (Tracked("0" * 32, "1"), Tracked("1" * 32, "1"))
    messages: list[str] = []
    context = _gate_context(broken, tmp_path, runs, monkeypatch)
    context.progress = messages.append

    with pytest.raises(Rejected):
        gate_step(context)

    assert sum("not annotated" in m for m in messages) == 2, messages
