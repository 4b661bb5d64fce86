"""The offline half of `recsys monitor quality`: the newest ranker in the model store beside the one serving, on
the evaluation split's held-out interactions, through the served candidate artifact and point-in-time features.

Two rankers are trained on the tiny serving world's held-out lists: one on their labels, one on the labels
flipped (it learns to put what users took last). Published in that order, the flipped one is the newest: the
report must show it below the one in service and fail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.quality import quality_report
from monitoring.quality_offline import ArtifactCandidates, holdout, ranker_versions
from recsys import serving_log
from recsys.features.service import RANKER_SERVICE, service_layout
from recsys.features.store import open_feature_store
from recsys.models.ranker import columns_of
from recsys.settings import Settings
from tests.bento_services.pipeline_data import build_world, with_features
from tests.conftest import make_settings
from training.ranker_data import candidate_lists
from training.ranker_data import with_features as joined
from training.ranker_train import RankerTrainConfig, save_ranker, train_ranker

FAST = RankerTrainConfig(epochs=8, learning_rate=5e-3, patience=3, members=1, threads=1)


def publish(settings: Settings, home: Path) -> None:
    """Train `taught` on the held-out lists' labels and `flipped` on their opposite; publish in that order."""
    held = holdout(settings.lake_path, users=1_000)
    users = sorted(held.relevant)
    lists = candidate_lists(ArtifactCandidates(settings, held.history), users, held.at, held.relevant,
                            settings.serving.rank_depth)
    store = open_feature_store(settings)
    examples = joined(store, lists, RANKER_SERVICE)
    columns = columns_of(service_layout(store, RANKER_SERVICE).specs)
    start, end = min(held.at.values()).to_pydatetime(), max(held.at.values()).to_pydatetime()
    for version, labels in [("taught", examples["label"]), ("flipped", 1 - examples["label"])]:
        trained = train_ranker(examples.assign(label=labels), columns, FAST, progress=lambda _: None, version=version)
        save_ranker(trained, RANKER_SERVICE, start, end, {}, home)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    tmp_path = tmp_path_factory.mktemp("offline")
    base = build_world(make_settings("local", tmp_path), tmp_path, users=40, items=80, interactions=3_000)
    settings = with_features(base, tmp_path, day=datetime(2026, 1, 1, tzinfo=UTC))
    home = tmp_path / "bentoml"
    publish(settings, home)
    at = datetime(2026, 1, 11, 12, tzinfo=UTC)  # the serving log says `taught` is the ranker in service
    serving_log.write(settings.lake_path, [{
        "request_id": f"r{n}", "served_at": int((at + timedelta(minutes=n)).timestamp() * 1000), "user_id": "u1",
        "variant": "control", "bucket": 1, "model_version": "taught", "candidates_version": "v-test",
        "degradation": "full", "cached": False, "latency_ms": 5.0, "stage_ms": {}, "item_ids": ["1"],
        "scores": [1.0], "sources": ["collaborative"], "explanations": ["similar_users"], "features": None}
        for n in range(3)])
    return settings, home


def test_the_newest_ranker_is_measured_beside_the_one_in_service(world: tuple[Settings, Path]) -> None:
    settings, home = world
    assert ranker_versions(home) == ["flipped", "taught"]
    folder, verdict = quality_report(settings, offline=True, home=home)
    summary = json.loads((folder / "quality_offline.json").read_text())
    assert (summary["newest"], summary["serving"]) == ("flipped", "taught")
    ndcg, mrr = summary["metrics"]["ndcg@10"], summary["metrics"]["mrr@10"]
    assert ndcg["serving"] > ndcg["newest"] and mrr["serving"] > mrr["newest"], summary["metrics"]
    assert summary["users"] > 20
    assert not verdict.ok and "flipped" in verdict.line and "taught" in verdict.line
    assert verdict.metrics["offline_ndcg@10_serving"] == pytest.approx(ndcg["serving"])
    assert (folder / "quality_offline.html").stat().st_size > 100_000  # Evidently's page, both columns
    assert {"quality_offline.html", "quality_offline.json", "quality_online.html"} <= set(verdict.files)
