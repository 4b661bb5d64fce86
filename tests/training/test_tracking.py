"""Experiment tracking: what a run records can be read back through MLflow, and a broken store never fails
the training that calls it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient

from embeddings.artifacts import CandidateArtifacts
from embeddings.train import TrainConfig
from recsys.settings import Settings
from training.tracking import (
    MAX_CURVE_POINTS,
    RunRecord,
    annotate,
    candidate_record,
    list_versions,
    runs_frame,
    track,
)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The default local store (sqlite under data_dir/mlruns), in a folder of the module's own."""
    return Settings.load(data_dir=tmp_path_factory.mktemp("tracking"))


def test_a_run_reads_back_with_params_metrics_curves_artifacts_and_its_version(settings: Settings,
                                                                              tmp_path: Path) -> None:
    plot = tmp_path / "curve.png"
    plot.write_bytes(b"png")
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "metrics.json").write_text("{}")
    losses = [1.0 / (step + 1) for step in range(2500)]  # longer than a curve is logged
    record = RunRecord(kind="ranker", version="v1", serving_ref="ranker:v1",
                       params={"depth": 100, "train": {"epochs": 3}}, metrics={"ndcg@10": 0.25, "auc": 0.7},
                       curves={"loss": losses, "val_auc": [0.6, 0.65, 0.7]}, first_step=1, artifacts=[plot, folder],
                       data_end=datetime(2024, 1, 2, tzinfo=UTC))
    messages: list[str] = []

    tracked = track(settings, record, messages.append)

    assert tracked is not None and tracked.model_version == "1"
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"depth": "100", "train.epochs": "3"}
    assert run.data.metrics["ndcg_at_10"] == 0.25 and run.data.metrics["auc"] == 0.7
    assert run.data.tags["serving_ref"] == "ranker:v1" and run.data.tags["data_end"] == "2024-01-02T00:00:00+00:00"
    auc = client.get_metric_history(tracked.run_id, "val_auc")
    assert [(m.step, m.value) for m in sorted(auc, key=lambda m: m.step)] == [(1, 0.6), (2, 0.65), (3, 0.7)]
    loss = sorted(client.get_metric_history(tracked.run_id, "loss"), key=lambda m: m.step)
    assert len(loss) <= MAX_CURVE_POINTS and loss[0].value > loss[-1].value and loss[-1].step == 2500
    assert {a.path for a in client.list_artifacts(tracked.run_id)} == {"curve.png", "report"}
    assert [a.path for a in client.list_artifacts(tracked.run_id, "report")] == ["report/metrics.json"]
    assert annotate(settings, tracked, "ranker", metrics={"gate_ndcg@10": 0.3}, tags={"state": "serving"},
                    progress=messages.append)
    [version] = list_versions(settings, "ranker")
    assert (version.version, version.run_id, version.serving_ref) == ("1", tracked.run_id, "ranker:v1")
    assert version.metrics["ndcg_at_10"] == 0.25 and version.metrics["gate_ndcg_at_10"] == 0.3
    assert version.tags["state"] == "serving"
    frame = runs_frame(settings, kind="ranker")
    assert list(frame["run_id"]) == [tracked.run_id] and frame["metrics.auc"].iloc[0] == 0.7
    assert any(tracked.run_id in m for m in messages)


def test_a_two_tower_build_records_its_loss_and_metadata_but_not_its_weights(settings: Settings,
                                                                             tmp_path: Path) -> None:
    folder = tmp_path / "models" / "two-tower-20240102-s7"
    for part in ("two_tower", "item_index", "item_neighbours"):
        (folder / part).mkdir(parents=True)
        (folder / part / "meta.json").write_text(json.dumps({"version": folder.name}))
    (folder / "two_tower" / "model.pt").write_bytes(b"weights")
    (folder / "item_index" / "index.faiss").write_bytes(b"index")
    (folder / "two_tower" / "meta.json").write_text(json.dumps({
        "version": folder.name, "data_start": "2024-01-01T00:00:00+00:00", "data_end": "2024-01-02T00:00:00+00:00",
        "examples_per_second": 1000.0, "losses": [4.0, 3.0, 2.0, 1.0]}))
    built = CandidateArtifacts(folder.name, folder, items=50, users=20)

    tracked = track(settings, candidate_record(built, TrainConfig(epochs=2)), lambda message: None)

    assert tracked is not None
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(tracked.run_id)
    assert run.data.metrics["loss_last_epoch"] == 1.5 and run.data.params["epochs"] == "2"
    assert run.data.tags["serving_ref"] == f"models/{folder.name}"
    stored = {a.path for d in ("two_tower", "item_index", "item_neighbours")
              for a in client.list_artifacts(tracked.run_id, d)}
    assert stored == {"two_tower/meta.json", "item_index/meta.json", "item_neighbours/meta.json"}
    [version] = list_versions(settings, "two-tower")
    assert version.source == folder.resolve().as_uri()


def test_an_unreachable_tracking_server_does_not_fail_the_caller(tmp_path: Path) -> None:
    broken = Settings.load(data_dir=tmp_path).model_copy(update={"tracking": {
        "uri": "http://127.0.0.1:9", "http_timeout_s": 1, "http_retries": 0}})
    messages: list[str] = []

    tracked = track(broken, RunRecord(kind="ranker", version="v2", serving_ref="ranker:v2"), messages.append)

    assert tracked is None
    assert any("not recorded" in m for m in messages)


def test_a_ranker_run_has_one_curve_per_member_and_quantity_by_epoch(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import pandas as pd

    from training.ranker_eval import RankerEvalConfig, RankerRun, ranker_record

    history = [{"member": m, "epoch": e, "train_loss": 1.0 / e, "val_loss": 2.0 / e, "val_auc": 0.5 + e / 100}
               for m in (0, 1) for e in (1, 2, 3)]
    ranked = SimpleNamespace(trained=SimpleNamespace(history=history, best_epoch=3), config=RankerEvalConfig(),
                             data_window=(pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")))
    run = RankerRun("ranker:abc", {"auc": 0.7}, tmp_path / "ranker_curve.png")

    record = ranker_record(ranked, run)  # type: ignore[arg-type]

    assert (record.kind, record.version, record.serving_ref, record.first_step) == ("ranker", "abc", "ranker:abc", 1)
    assert set(record.curves) == {f"{q}/member_{m}" for q in ("train_loss", "val_loss", "val_auc") for m in (1, 2)}
    assert record.curves["val_loss/member_2"] == [2.0, 1.0, 2.0 / 3]
    assert record.metrics == {"auc": 0.7, "best_epoch": 3} and record.params["train"]["members"] == 5
