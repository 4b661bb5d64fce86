"""The real Wide & Deep ranker on real features: a synthetic lake whose events end yesterday, the Spark
feature job, `feast apply` and materialization, the two-tower candidates; then the ranker trained, measured
and saved (`train_and_save`), re-ranking lists (`RankedCandidates`), and serving through the pipeline and
the HTTP API with the ranker loaded back from the model store.

One module-scoped world (about a minute); small models (one epoch, one ensemble member).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bento_services.api.http import create_app
from bento_services.pipeline.batch import batch_settings
from bento_services.pipeline.contracts import Degradation, RecommendationRequest
from bento_services.pipeline.pipeline import build_pipeline
from embeddings.artifacts import build_candidate_artifacts
from embeddings.train import TrainConfig
from ingestion.features.engineering import FeatureJobConfig, run_feature_job
from ingestion.features.materialize import materialize
from recsys.backends import open_bus, open_lake
from recsys.features.store import apply_repo, open_feature_store
from recsys.models.ranker import WideDeepRanker, load_ranker
from recsys.settings import Settings
from tests.bento_services.pipeline_data import World, build_world
from tests.conftest import make_settings, own_feature_repo
from training.ranker_eval import RankedCandidates, RankerEvalConfig, RankerRun, split_lake, train_and_save
from training.ranker_train import RankerTrainConfig

SMALL = RankerEvalConfig(depth=20, candidate_epochs=1, train=RankerTrainConfig(epochs=2, members=1, patience=1))


@dataclass
class RankerWorld:
    world: World
    settings: Settings
    home: Path
    run: RankerRun
    data_end: datetime


@pytest.fixture(scope="module")
def ranked_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankerWorld]:
    tmp = tmp_path_factory.mktemp("ranker-world")
    settings = own_feature_repo(make_settings("local", tmp), tmp)
    start = pd.Timestamp(datetime.now(UTC) - timedelta(days=11)).floor("D")
    world = build_world(settings, tmp, users=60, items=120, start=start, interactions=6_000)
    run_feature_job(FeatureJobConfig(lake=settings.lake_path, output=settings.feature_data_path),
                    progress=lambda _: None)
    apply_repo(settings)
    data_end = pd.Timestamp(world.events["event_time"].max()).to_pydatetime() + timedelta(seconds=1)
    materialize(open_feature_store(settings), end=data_end)
    build_candidate_artifacts(settings, TrainConfig(epochs=1), progress=lambda _: None)
    home = tmp / "bentoml"
    run = train_and_save(settings.lake_path, world.items, open_feature_store(settings), tmp / "ranker", SMALL,
                         home=home, progress=lambda _: None)
    yield RankerWorld(world, settings, home, run, data_end)


def test_train_and_save_stores_the_measured_ranker(ranked_world: RankerWorld) -> None:
    run, home = ranked_world.run, ranked_world.home
    assert 0.0 <= run.metrics["auc"] <= 1.0 and run.metrics["lists"] > 0
    assert run.curve.is_file()
    saved = json.loads((run.curve.parent / "ranker_metrics.json").read_text())
    assert saved["tag"] == run.tag and saved["auc"] == pytest.approx(run.metrics["auc"])
    ranker = load_ranker(run.tag, home)
    assert isinstance(ranker, WideDeepRanker) and f"ranker:{ranker.version}" == run.tag
    train, test = split_lake(ranked_world.settings.lake_path)
    # Trained on the training part only: its data window ends before the hold-out begins.
    assert pd.Timestamp(ranker.metadata["data_end"]) == train["event_time"].max()
    assert ranker.metadata["feature_service"] == "ranker_v2"


def test_ranked_candidates_fit_and_recommend(ranked_world: RankerWorld) -> None:
    train, test = split_lake(ranked_world.settings.lake_path)
    ranked = RankedCandidates(ranked_world.world.items, open_feature_store(ranked_world.settings), SMALL,
                              progress=lambda _: None)
    ranked.fit(train)
    users = sorted(test["user_id"].unique())[:10]
    lists = ranked.recommend(users, k=30)
    seen = train.groupby("user_id")["item_id"].agg(set)
    catalog = set(ranked_world.world.items["item_id"].astype(str))
    examples, scores = ranked.scored_lists(users)
    for user in users:
        got = lists[user]
        assert len(got) == 30 and len(set(got)) == 30 and set(got) <= catalog
        assert not set(got) & seen.get(user, set()), "recommended an item the user already has"
        mine = examples.assign(score=scores)[examples["user_id"] == user]
        by_score = list(mine.sort_values("score", ascending=False, kind="stable")["item_id"])
        assert got[:SMALL.depth] == by_score[:SMALL.depth], "the head is not in ranker order"


def _pipeline_answers(world: RankerWorld, at: datetime | None, ranked: bool) -> dict[str, list[str]]:
    ranker = load_ranker(world.run.tag, world.home) if ranked else None
    # Batch budgets: these checks are about which rung answers, not about a busy machine's timeouts.
    pipeline = build_pipeline(batch_settings(world.settings), ranker=ranker)
    try:
        _, test = split_lake(world.settings.lake_path)
        answers = {}
        for user in sorted(test["user_id"].unique()):
            answer = pipeline.recommend(RecommendationRequest(user, n=10, at=at), use_precomputed=False)
            expected = (Degradation.FULL if at is None else Degradation.STALE_FEATURES) if ranked else \
                Degradation.CANDIDATE_SCORES
            assert answer.degradation == expected, (user, answer.degradation)
            if ranked and at is None:
                assert answer.model_version == ranker.version  # type: ignore[union-attr]
            answers[user] = [item.item_id for item in answer.items]
        return answers
    finally:
        pipeline.close()


def test_pipeline_ranks_with_the_stored_ranker_on_materialized_features(ranked_world: RankerWorld) -> None:
    answers = _pipeline_answers(ranked_world, at=None, ranked=True)
    plain = _pipeline_answers(ranked_world, at=None, ranked=False)
    assert answers and any(answers[u] != plain[u] for u in answers), "the ranker changed no list"


def test_all_stale_features_are_no_worse_than_candidate_order(ranked_world: RankerWorld) -> None:
    """Asked two years after the data: every stored row is past its TTL, so the lists are candidate order,
    and on the evaluation split they score exactly what candidate order scores."""
    later = datetime.now(UTC) + timedelta(days=730)
    stale = _pipeline_answers(ranked_world, at=later, ranked=True)
    plain = _pipeline_answers(ranked_world, at=later, ranked=False)
    _, test = split_lake(ranked_world.settings.lake_path)
    relevant = test.groupby("user_id")["item_id"].agg(set)
    assert _ndcg(stale, relevant) >= _ndcg(plain, relevant)
    assert stale == plain


def _ndcg(lists: dict[str, list[str]], relevant: pd.Series, k: int = 10) -> float:
    gains = []
    for user, items in lists.items():
        wanted = relevant.get(user, set())
        dcg = sum(1 / np.log2(rank + 2) for rank, item in enumerate(items[:k]) if item in wanted)
        ideal = sum(1 / np.log2(rank + 2) for rank in range(min(k, len(wanted))))
        gains.append(dcg / ideal if ideal else 0.0)
    return float(np.mean(gains))


def test_http_answers_with_the_stored_ranker(ranked_world: RankerWorld) -> None:
    settings = ranked_world.settings
    ranker = load_ranker(ranked_world.run.tag, ranked_world.home)
    pipeline = build_pipeline(settings, ranker=ranker)
    user = ranked_world.world.warm_user
    key = settings.serving.api_keys[0].get_secret_value()
    with TestClient(create_app(settings, pipeline, open_bus(settings), close_on_shutdown=True)) as client:
        answer = client.get("/recommendations", params={"user_id": user, "n": 10}, headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["degradation"] == "full" and body["model_version"] == ranker.version
    assert len(body["items"]) == 10
    history = set(open_lake(settings).interactions(columns=["user_id", "item_id"]).to_pandas()
                  .query("user_id == @user")["item_id"])
    assert not {item["item_id"] for item in body["items"]} & history
