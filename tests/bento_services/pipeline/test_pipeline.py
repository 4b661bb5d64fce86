"""The request pipeline end to end on a tiny world: full path, cold start, unknown users, layer 1,
"not interested", experiments and the caches."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bento_services.metrics import CACHE_LOOKUPS
from bento_services.pipeline.assignment import assign
from bento_services.pipeline.batch import batch_settings, precompute
from bento_services.pipeline.contracts import Degradation, RecommendationRequest
from bento_services.pipeline.pipeline import build_pipeline
from recsys.models.candidates import CandidateGenerator
from recsys.settings import ExperimentVariant
from tests.bento_services.pipeline_data import FakeRanker, World, build_world, with_features
from tests.conftest import make_settings

SOURCES = {"collaborative": "similar_users", "content": "similar_items", "popularity": "popular_in_category",
           "trending": "trending"}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(make_settings("local", tmp_path), tmp_path)


def lookups(layer: str, result: str) -> float:
    return CACHE_LOOKUPS.labels(layer, result)._value.get()


def test_a_warm_user_gets_unseen_items_with_provenance(world: World) -> None:
    # Provenance, not budgets: a stage past its budget on a busy machine would leave the history out.
    pipeline = build_pipeline(batch_settings(world.settings))
    answer = pipeline.recommend(RecommendationRequest(world.warm_user, n=12))
    seen = set(world.events.loc[world.events["user_id"] == world.warm_user, "item_id"])
    ids = [i.item_id for i in answer.items]
    assert len(ids) == 12 == len(set(ids)) and not seen & set(ids)
    assert answer.degradation == Degradation.CANDIDATE_SCORES  # no ranker injected
    assert answer.variant == "control" and answer.model_version == "v-test" and not answer.cached
    assert all(SOURCES[i.source] == i.explanation for i in answer.items)
    assert {"candidates", "postprocess", "total"} <= set(answer.stage_ms)
    pipeline.close()


def test_with_a_ranker_the_order_is_the_rankers(world: World, tmp_path: Path) -> None:
    ranker = FakeRanker()
    pipeline = build_pipeline(with_features(world, tmp_path), ranker=ranker)
    answer = pipeline.recommend(RecommendationRequest(world.warm_user, n=10))
    assert answer.degradation == Degradation.FULL and answer.model_version == "fake-ranker-1"
    cold = pipeline.recommend(RecommendationRequest(world.cold_user, n=10))  # registered, never seen in an event
    assert cold.degradation == Degradation.COLD_START and cold.items and ranker.calls == 1  # nothing to rank
    hits, misses = lookups("feature", "hit"), lookups("feature", "miss")
    pipeline.recommend(RecommendationRequest(world.warm_user, n=10))  # the user row is in layer 3 now
    assert lookups("feature", "hit") > hits and lookups("feature", "miss") == misses
    pipeline.close()


def test_cold_start_uses_onboarding_categories(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    answer = pipeline.recommend(RecommendationRequest(world.cold_user, n=5))
    preferred = str(world.items["category"].iloc[0])
    categories = dict(zip(world.items["item_id"].astype(str), world.items["category"].astype(str)))
    assert answer.items and sum(categories[i.item_id] == preferred for i in answer.items) >= 3
    pipeline.close()


def test_an_unknown_user_gets_the_cold_start_rung(world: World) -> None:
    pipeline = build_pipeline(batch_settings(world.settings))  # budgets no busy machine runs past
    answer = pipeline.recommend(RecommendationRequest("nobody-at-all", n=5))
    assert answer.degradation == Degradation.COLD_START and answer.model_version == "popular"
    popular = [i for i, _ in pipeline.tables.popular if pipeline.post.allowed(i, set())][:5]
    assert [(i.item_id, i.explanation) for i in answer.items] == [(i, "popular") for i in popular]
    pipeline.close()


def test_not_interested_excludes_from_the_next_answer_and_survives_a_restart(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    first = pipeline.recommend(RecommendationRequest(world.warm_user, n=5)).items[0].item_id
    pipeline.not_interested(world.warm_user, first)
    assert first not in {i.item_id for i in pipeline.recommend(RecommendationRequest(world.warm_user, n=5)).items}
    pipeline.close()
    restarted = build_pipeline(world.settings)
    assert first not in {i.item_id for i in restarted.recommend(RecommendationRequest(world.warm_user, n=50)).items}
    restarted.close()


def test_precomputed_is_the_cached_path_unless_the_variant_changes_ranking(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    computed = pipeline.recommend(RecommendationRequest(world.warm_user, n=10), use_precomputed=False)
    hits = lookups("precomputed", "hit")
    assert precompute(pipeline, [world.warm_user], k=10) == 1
    cached = pipeline.recommend(RecommendationRequest(world.warm_user, n=10))
    assert cached.cached and cached.degradation == Degradation.FULL and lookups("precomputed", "hit") == hits + 1
    assert [i.item_id for i in cached.items] == [i.item_id for i in computed.items]
    assert [i.source for i in cached.items] == [i.source for i in computed.items]
    pipeline.not_interested(world.warm_user, cached.items[0].item_id)  # today's rules apply to cached lists
    assert cached.items[0].item_id not in {
        i.item_id for i in pipeline.recommend(RecommendationRequest(world.warm_user, n=5)).items}
    pipeline.close()
    arm = assign(world.warm_user, [])
    variant = ExperimentVariant(name="exp_div", buckets=(arm.bucket, arm.bucket + 1), diversity_boost=1.0)
    settings = world.settings.model_copy(update={"serving": world.settings.serving.model_copy(
        update={"experiments": [variant]})})
    in_variant = build_pipeline(settings)
    answer = in_variant.recommend(RecommendationRequest(world.warm_user, n=10))
    assert answer.variant == "exp_div" and not answer.cached
    in_variant.close()


def test_a_variant_gets_its_own_ranker(world: World, tmp_path: Path) -> None:
    arm = assign(world.warm_user, [])
    variant = ExperimentVariant(name="exp_r2", buckets=(arm.bucket, arm.bucket + 1), ranker_version="r2")
    featured = with_features(world, tmp_path)
    settings = featured.model_copy(update={"serving": featured.serving.model_copy(update={"experiments": [variant]})})
    pipeline = build_pipeline(settings, ranker=FakeRanker("r1"), variant_rankers={"r2": FakeRanker("r2")})
    answer = pipeline.recommend(RecommendationRequest(world.warm_user, n=5))
    assert answer.variant == "exp_r2" and answer.model_version == "r2"
    pipeline.close()


def test_the_embedding_cache_saves_the_second_read(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    misses, hits = lookups("embedding", "miss"), lookups("embedding", "hit")
    for _ in range(3):
        pipeline.recommend(RecommendationRequest(world.warm_user, n=5), use_precomputed=False)
    assert lookups("embedding", "miss") == misses + 1 and lookups("embedding", "hit") == hits + 2
    pipeline.close()


def test_readiness_names_each_dependency(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    assert pipeline.readiness() == {"candidates": True, "ranker": False, "features": False, "catalog": True,
                                    "popular": True}
    pipeline.close()


def test_the_serving_generator_answers_like_the_plain_one(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    assert pipeline.retriever is not None
    retriever = pipeline.retriever
    plain = CandidateGenerator(retriever.tables, nprobe=pipeline.settings.serving.nprobe)
    for user in world.events["user_id"].unique()[:5]:
        history = pipeline._history(str(user))
        vector = pipeline.embeddings.get(str(user))
        ours = retriever.retrieve(vector, history, set(history), [])
        assert ours == plain.generate(vector, history, set(history))
    pipeline.close()


def test_refresh_swaps_in_a_new_artifact_but_never_a_broken_one(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    models = world.settings.data_path / "models"
    shutil.copytree(world.folder, models / "v2")
    (models / "CURRENT").write_text("v2")
    assert pipeline.refresh() and pipeline.tables.folder_name == "v2"
    shutil.copytree(world.folder, models / "v3")
    (models / "v3" / "item_index" / "index.faiss").write_bytes(b"garbage")
    (models / "CURRENT").write_text("v3")
    assert not pipeline.refresh() and pipeline.tables.folder_name == "v2"
    assert pipeline.recommend(RecommendationRequest(world.warm_user, n=5)).degradation == Degradation.CANDIDATE_SCORES
    pipeline.close()


def test_embedding_scores_are_inner_products_and_zero_without_vectors(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    assert pipeline.retriever is not None
    vector = pipeline.embeddings.get(world.warm_user)
    assert vector is not None
    ids = [str(world.items["item_id"].iloc[0]), "not-an-item", str(world.items["item_id"].iloc[1])]
    scores = pipeline.retriever.embedding_scores(vector, ids)
    vectors = pipeline.retriever.tables.vectors
    assert scores[1] == 0.0
    assert scores[0] == pytest.approx(float(vectors[ids[0]] @ vector), abs=1e-5)
    assert scores[2] == pytest.approx(float(vectors[ids[2]] @ vector), abs=1e-5)
    assert not pipeline.retriever.embedding_scores(None, ids).any()
    pipeline.close()


def test_more_asked_than_candidates_is_topped_up_with_popular_items(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    seen = set(world.events.loc[world.events["user_id"] == world.warm_user, "item_id"])
    servable = len(world.items) - len(seen)
    answer = pipeline.recommend(RecommendationRequest(world.warm_user, n=len(world.items)))
    ids = [i.item_id for i in answer.items]
    assert len(ids) == len(set(ids)) and not seen & set(ids) and len(ids) <= servable
    assert [i.rank for i in answer.items] == list(range(1, len(ids) + 1))
    assert [i.score for i in answer.items] == sorted((i.score for i in answer.items), reverse=True)
    pipeline.close()


def test_a_user_without_a_stored_vector_gets_one_folded_in_after_a_few_interactions(world: World) -> None:
    import numpy as np
    import pandas as pd

    from recsys.backends import open_catalog, open_interactions
    from recsys.events import INTERACTION_COLUMNS

    user, items = "fold-in-user", [str(i) for i in world.items["item_id"][:3]]
    with open_catalog(world.settings) as catalog:
        catalog.write(users=pd.DataFrame({"user_id": [user], "preferred_categories": [[]]}))
    pipeline = build_pipeline(world.settings)
    assert pipeline.retriever is not None
    seen: list[object] = []
    retrieve = pipeline.retriever.retrieve
    pipeline.retriever.retrieve = lambda vector, *rest: seen.append(vector) or retrieve(vector, *rest)  # type: ignore[method-assign]
    wanted = world.settings.streaming.fold_in_after
    for count in range(1, len(items) + 1):
        with open_interactions(world.settings) as store:
            store.write(pd.DataFrame([{
                "event_id": f"fold-{count}", "user_id": user, "item_id": items[count - 1],
                "event_time": pd.Timestamp("2026-01-05", tz="UTC") + pd.Timedelta(minutes=count),
                "action_type": "click", "value": np.nan, "session_id": None, "context": None,
            }], columns=list(INTERACTION_COLUMNS)))
        pipeline.recommend(RecommendationRequest(user, n=5))
        vector = seen[-1] if seen else None
        if count < wanted:
            assert vector is None, count
        else:
            rows = [pipeline.retriever._rows[i] for i in items[:count]]
            centre = pipeline.retriever._matrix[rows].mean(axis=0)
            assert np.allclose(vector, centre / np.linalg.norm(centre), atol=1e-6)  # type: ignore[arg-type]
    assert len(seen) >= 1
    pipeline.close()
