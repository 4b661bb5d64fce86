"""Every rung of the degradation ladder, each proven by injecting its failure.

The answer is never empty and carries the rung it came from: ranker fails or times out -> candidate
scores; candidate generation fails (index missing, corrupt, raising) -> precomputed, else popular;
features unavailable -> typed defaults; everything failing -> popular. The `services` tests stop a
private Redis or PostgreSQL started for the test, never the shared servers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from bento_services.metrics import DEGRADATIONS, STAGE_FAILURES
from bento_services.pipeline.batch import precompute
from bento_services.pipeline.contracts import Degradation, RecommendationRequest, RecommendationResponse
from bento_services.pipeline.pipeline import RecommendationPipeline, build_pipeline
from bento_services.pipeline.stages import StageFailed, StageRunner
from recsys.settings import ExperimentVariant, Settings
from tests.bento_services.pipeline_data import FakeRanker, PrivateServer, World, build_world, with_features
from tests.conftest import make_settings
from tests.features.tables import T0

#: Everyone in a variant that changes ranking: layer 1 is not their cached answer, only the ANN fallback.
EVERYONE_DIVERSE = [ExperimentVariant(name="exp_diverse", buckets=(0, 100), diversity_boost=0.2)]


def local_world(tmp_path: Path, **serving: object) -> World:
    settings = make_settings("local", tmp_path)
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update=serving)})
    return build_world(settings, tmp_path)


def ask(pipeline: RecommendationPipeline, user: str, n: int = 10) -> RecommendationResponse:
    answer = pipeline.recommend(RecommendationRequest(user, n=n))
    assert answer.items, f"empty answer at {answer.degradation}"
    assert [i.rank for i in answer.items] == list(range(1, len(answer.items) + 1))
    return answer


def failures(stage: str, reason: str) -> float:
    return STAGE_FAILURES.labels(stage, reason)._value.get()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return local_world(tmp_path, experiments=EVERYONE_DIVERSE)


@pytest.fixture
def featured(world: World, tmp_path: Path) -> Settings:
    return with_features(world, tmp_path)


def test_the_full_path_is_full(featured: Settings, world: World) -> None:
    ranker = FakeRanker()
    with_ranker = build_pipeline(featured, ranker=ranker)
    answer = ask(with_ranker, world.warm_user)
    assert answer.degradation == Degradation.FULL and answer.model_version == ranker.version
    assert "item_features__avg_rating" in ranker.feature_columns
    with_ranker.close()


def test_stale_features_keep_candidate_order_and_are_counted(world: World, tmp_path: Path) -> None:
    """Every stored row is past its TTL (written in 2024, asked now): the ranker would see inputs it never
    trained on, so the answer keeps candidate order; the same request replayed as of then is ranked."""
    stale = with_features(world, tmp_path, day=T0)
    ranker = FakeRanker()
    ranked, plain = build_pipeline(stale, ranker=ranker), build_pipeline(stale)
    before = DEGRADATIONS.labels("stale_features")._value.get()
    answer = ask(ranked, world.warm_user)
    assert answer.degradation == Degradation.STALE_FEATURES and ranker.calls == 0
    assert DEGRADATIONS.labels("stale_features")._value.get() == before + 1
    assert [i.item_id for i in answer.items] == [i.item_id for i in ask(plain, world.warm_user).items]
    replay = ranked.recommend(RecommendationRequest(world.warm_user, n=10, at=T0 + timedelta(days=1)))
    assert replay.degradation == Degradation.FULL and ranker.calls == 1
    ranked.close()
    plain.close()


def test_a_user_without_recent_rows_is_still_ranked(world: World, tmp_path: Path) -> None:
    """A fresh store, but no user row for this user (back after a long absence) and half the items last
    touched two years ago: single missing values take defaults and the answer is ranked, not `stale_features`."""
    from datetime import UTC, datetime

    from ingestion.features.materialize import materialize
    from recsys.features.store import apply_repo, open_feature_store
    from tests.conftest import own_feature_repo
    from tests.features.tables import item_rows, user_rows, write_empty_extras, write_table

    day = datetime.now(UTC) - timedelta(days=1)
    settings = own_feature_repo(world.settings, tmp_path)
    write_table(settings, "user_features", [user_rows("someone-else", day, created_timestamp=day)])
    write_table(settings, "item_features", [
        item_rows(str(i), day if k % 2 else day - timedelta(days=730), category=str(c), created_timestamp=day)
        for k, (i, c) in enumerate(zip(world.items["item_id"], world.items["category"]))])
    write_empty_extras(settings)
    apply_repo(settings)
    materialize(open_feature_store(settings), end=day + timedelta(seconds=1))
    ranker = FakeRanker()
    pipeline = build_pipeline(settings, ranker=ranker)
    answer = ask(pipeline, world.warm_user)
    assert answer.degradation == Degradation.FULL and ranker.calls == 1
    pipeline.close()


def test_ranker_raises_gives_candidate_scores(featured: Settings, world: World) -> None:
    before = failures("ranking", "error")
    pipeline = build_pipeline(featured, ranker=FakeRanker(fail="raise"))
    answer = ask(pipeline, world.warm_user)
    assert answer.degradation == Degradation.CANDIDATE_SCORES and failures("ranking", "error") == before + 1
    pipeline.close()


def test_ranker_slower_than_its_timeout_gives_candidate_scores(featured: Settings, world: World) -> None:
    timeouts = {**featured.serving.stage_timeout_ms, "ranking": 50.0}
    settings = featured.model_copy(update={"serving": featured.serving.model_copy(
        update={"stage_timeout_ms": timeouts})})
    pipeline = build_pipeline(settings, ranker=FakeRanker(delay_seconds=6.0))
    started = time.perf_counter()
    answer = ask(pipeline, world.warm_user)
    assert answer.degradation == Degradation.CANDIDATE_SCORES
    assert time.perf_counter() - started < 3.0  # waited for the 50 ms budget, not for the 6 s ranker
    pipeline.close()


def test_features_unavailable_gives_typed_defaults(featured: Settings, world: World) -> None:
    ranker = FakeRanker()
    pipeline = build_pipeline(featured, ranker=ranker)
    assert pipeline.assembler is not None

    def down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("online store down")

    pipeline.assembler.online._provider.online_read = down  # type: ignore[method-assign]
    answer = ask(pipeline, world.warm_user)
    assert answer.degradation == Degradation.DEFAULT_FEATURES and ranker.calls == 1
    assert "user_features__interactions_total" in ranker.feature_columns
    pipeline.close()


def break_index(world: World, how: str) -> None:
    faiss_file = world.folder / "item_index" / "index.faiss"
    if how == "missing":
        faiss_file.unlink()
    else:
        faiss_file.write_bytes(b"not a faiss index" * 10)


@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_a_bad_index_falls_back_to_precomputed_else_popular(world: World, how: str) -> None:
    healthy = build_pipeline(world.settings)
    precompute(healthy, [world.warm_user], k=20)
    healthy.close()
    break_index(world, how)
    pipeline = build_pipeline(world.settings)
    assert not pipeline.readiness()["candidates"]
    fallback = ask(pipeline, world.warm_user)
    assert fallback.degradation == Degradation.PRECOMPUTED and not fallback.cached
    other = str(world.events["user_id"].value_counts().index[1])
    assert ask(pipeline, other).degradation == Degradation.POPULAR
    pipeline.close()


def test_an_index_that_raises_at_request_time_falls_back(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    assert pipeline.retriever is not None

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("faiss blew up")

    pipeline.retriever.tables.index.search_rows = broken  # type: ignore[method-assign]
    before = failures("candidates", "error")
    assert ask(pipeline, world.warm_user).degradation == Degradation.POPULAR
    assert failures("candidates", "error") == before + 1
    pipeline.close()


def test_everything_failing_gives_popular(world: World) -> None:
    break_index(world, "missing")
    pipeline = build_pipeline(world.settings, ranker=FakeRanker(fail="raise"))

    def down() -> None:
        raise ConnectionError("down")

    for connection in (pipeline.catalog, pipeline.interactions, pipeline.vectors, pipeline.exclusions):
        connection._factory = down  # type: ignore[assignment]
    for layer in pipeline.layer1:
        layer.get = lambda *args, **kwargs: down()  # type: ignore[method-assign]
    answer = ask(pipeline, "whoever")  # the catalog cannot say the user is unknown: answer anyway
    assert answer.degradation == Degradation.POPULAR and answer.model_version == "popular"
    assert [i.item_id for i in answer.items] == [i for i, _ in pipeline.tables.popular[:10]]
    pipeline.close()


def test_a_stage_whose_threads_are_all_stuck_fails_at_once() -> None:
    runner = StageRunner({"slow": 20.0}, workers=2)
    release = threading.Event()
    for _ in range(2):
        with pytest.raises(StageFailed, match="timeout"):
            runner.run("slow", release.wait, {})
    started = time.perf_counter()
    with pytest.raises(StageFailed, match="saturated"):
        runner.run("slow", lambda: 1, {})
    assert time.perf_counter() - started < 2.0  # refused at once, not after the stage's 20 s budget
    assert runner.run("other", lambda: 2, {}) == 2  # other stages keep their own threads
    release.set()
    assert _eventually(lambda: runner.run("slow", lambda: 3, {})) == 3  # its threads come back
    runner.close()


def test_a_cheap_cpu_stage_runs_on_the_callers_thread_and_still_degrades_past_its_budget() -> None:
    from bento_services.pipeline.stages import INLINE_AFTER

    runner = StageRunner({"ranking": 200.0}, inline=["ranking"])
    here = threading.get_ident()
    threads = [runner.run("ranking", threading.get_ident, {}) for _ in range(INLINE_AFTER)]
    assert here not in threads  # proving itself on its pool first
    assert runner.inline("ranking") and runner.run("ranking", threading.get_ident, {}) == here
    with pytest.raises(StageFailed, match="timeout"):
        runner.run("ranking", lambda: time.sleep(0.25), {})  # inline, it cannot be abandoned: it degrades after
    assert not runner.inline("ranking")  # back on its pool: a slow call is abandoned at the budget again
    started = time.perf_counter()
    with pytest.raises(StageFailed, match="timeout"):
        runner.run("ranking", lambda: time.sleep(2.0), {})
    assert time.perf_counter() - started < 1.0
    assert not StageRunner({"features": 50.0}).inline("features")  # only the stages named
    runner.close()


def _eventually(attempt: Callable[[], int], seconds: float = 10.0) -> int:
    """`attempt()` once it stops failing with StageFailed (threads being released), within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return attempt()
        except StageFailed:
            if time.monotonic() > deadline:
                raise
            threading.Event().wait(0.02)


# -- services: a real server stops mid-flight -------------------------------------------------------------
def services_settings(tmp_path: Path, **updates: object) -> Settings:
    base = make_settings("services", tmp_path)
    serving = base.serving.model_copy(update={"experiments": EVERYONE_DIVERSE})
    return base.model_copy(update={"serving": serving, **updates})


@pytest.mark.services
def test_redis_stopped_in_services(tmp_path: Path, private_database: str) -> None:
    redis_server = PrivateServer("redis", "RECSYS_REDIS__PORT")
    try:
        redis_server.start()
        base = Settings.load()
        settings = services_settings(
            tmp_path, redis=base.redis.model_copy(update={"port": redis_server.port}),
            postgres=base.postgres.model_copy(update={"database": private_database}))
        control = settings.model_copy(update={"serving": settings.serving.model_copy(update={"experiments": []})})
        world = build_world(control, tmp_path)
        featured = with_features(world, tmp_path)
        pipeline = build_pipeline(featured, ranker=FakeRanker())
        users = [str(u) for u in world.events["user_id"].value_counts().index[:3]]
        precompute(pipeline, [users[2]], k=10)  # layer 1: Redis and the PostgreSQL table
        assert ask(pipeline, users[0]).degradation == Degradation.FULL
        redis_server.stop()
        started = time.perf_counter()
        answer = ask(pipeline, users[1])  # user row not cached: the online store is asked and fails
        assert answer.degradation == Degradation.DEFAULT_FEATURES
        assert time.perf_counter() - started < 5.0  # budgets, not redis-py's ~9 s of retries with backoff
        from_table = ask(pipeline, users[2])  # Redis layer down: the table still answers
        assert from_table.cached and from_table.degradation == Degradation.FULL
        pipeline.close()
    finally:
        redis_server.remove()


@pytest.mark.services
def test_postgres_stopped_in_services(tmp_path: Path, servers: None) -> None:
    postgres_server = PrivateServer("postgres", "RECSYS_POSTGRES__PORT")
    try:
        postgres_server.start()
        base = Settings.load()
        settings = services_settings(
            tmp_path, postgres=base.postgres.model_copy(update={"port": postgres_server.port, "database": "recsys"}),
            redis=base.redis.model_copy(update={"db": 7}))
        world = build_world(settings, tmp_path)
        pipeline = build_pipeline(settings)
        assert ask(pipeline, world.warm_user).degradation == Degradation.CANDIDATE_SCORES
        postgres_server.stop()
        again = ask(pipeline, world.warm_user)
        assert again.degradation == Degradation.CANDIDATE_SCORES
        assert ask(pipeline, "not-checkable-now").items  # no catalog to say 404: answer from what is there
        assert not pipeline.readiness()["catalog"]
        pipeline.close()
    finally:
        postgres_server.remove()


def test_the_ranker_scores_only_rank_depth_candidates_and_the_rest_follow(featured: Settings, world: World) -> None:
    class CountingRanker(FakeRanker):
        def score(self, features: dict[str, list[object]], candidate_scores: np.ndarray,
                  embedding_scores: np.ndarray) -> np.ndarray:
            self.sizes.append(len(candidate_scores))
            assert all(len(column) == len(candidate_scores) for column in features.values())
            return -np.arange(len(candidate_scores), dtype=np.float64)  # keeps the fusion order

        sizes: list[int] = []

    settings = featured.model_copy(update={"serving": featured.serving.model_copy(update={"rank_depth": 3})})
    ranker = CountingRanker()
    pipeline = build_pipeline(settings, ranker=ranker)
    answer = ask(pipeline, world.warm_user)
    assert answer.degradation == Degradation.FULL
    assert ranker.sizes == [3]
    assert len(answer.items) > 3  # the unranked tail still fills the list
    pipeline.close()


def test_below_ranked_puts_the_tail_under_every_ranked_score_in_fusion_order() -> None:
    from bento_services.pipeline.score import below_ranked

    scores = below_ranked(np.array([0.2, 0.9, -0.5]), np.array([0.30, 0.25, 0.01]))
    assert list(np.argsort(-scores)[:3]) == [1, 0, 2]
    assert scores[3:].max() < -0.5 and list(scores[3:]) == sorted(scores[3:], reverse=True)
    assert list(below_ranked(np.array([1.0]), np.array([]))) == [1.0]
