"""Overload makes a request cheaper, never dearer.

A layer-1 read that timed out or found its threads busy answers from the popular rung, never from the full
path; a request that has already spent its share of `serving.request_budget_ms` answers from its precomputed
list, else the popular items; a genuine miss (no list for the user) still takes the full path. The full path
is replaced by a recorder in each test, so "not called" is checked, not inferred from timings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bento_services.metrics import BUSY_ANSWERS
from bento_services.pipeline.batch import precompute
from bento_services.pipeline.contracts import Degradation, RecommendationRequest
from bento_services.pipeline.pipeline import RecommendationPipeline, build_pipeline
from recsys.stores.catalog import Recommendation
from tests.bento_services.pipeline.test_degradation import EVERYONE_DIVERSE, ask, local_world
from tests.bento_services.pipeline_data import World

SLOW_READ_S = 30.0  # far past the layer-1 budget; released at the end of each test


class FullPathSpy:
    """Stands in for `_full_path` after the real one ran once; counts calls."""

    def __init__(self, pipeline: RecommendationPipeline) -> None:
        self.real, self.calls = pipeline._full_path, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return local_world(tmp_path, stage_timeout_ms={"precomputed": 50.0})


@pytest.fixture
def pipeline(world: World) -> Iterator[RecommendationPipeline]:
    pipeline = build_pipeline(world.settings)
    precompute(pipeline, [world.warm_user], k=20)
    yield pipeline
    pipeline.close()


@pytest.fixture
def spy(pipeline: RecommendationPipeline) -> FullPathSpy:
    spy = FullPathSpy(pipeline)
    pipeline._full_path = spy  # type: ignore[method-assign]
    return spy


@pytest.fixture
def slow_layer1(pipeline: RecommendationPipeline) -> Iterator[threading.Event]:
    """Every layer-1 store hangs (a busy Redis) until the test ends."""
    release = threading.Event()

    def hanging(user_id: str, now: datetime | None = None) -> list[Recommendation]:
        release.wait(SLOW_READ_S)
        return []

    for layer in pipeline.layer1:
        layer.get = hanging  # type: ignore[method-assign]
    yield release
    release.set()


def busy(reason: str) -> float:
    return BUSY_ANSWERS.labels(reason)._value.get()


def test_a_layer1_read_past_its_budget_answers_popular_not_the_full_path(
        pipeline: RecommendationPipeline, world: World, spy: FullPathSpy, slow_layer1: threading.Event) -> None:
    before = busy("layer1_busy")
    answer = ask(pipeline, world.warm_user)
    assert answer.degradation == Degradation.POPULAR and not answer.cached
    assert [i.item_id for i in answer.items] == [i for i, _ in pipeline.tables.popular[:10]]
    assert spy.calls == 0 and busy("layer1_busy") == before + 1


def test_a_saturated_layer1_answers_popular_not_the_full_path(
        pipeline: RecommendationPipeline, world: World, spy: FullPathSpy, slow_layer1: threading.Event) -> None:
    for _ in range(pipeline.runner.workers):  # every layer-1 thread stuck in an abandoned read
        assert ask(pipeline, world.warm_user).degradation == Degradation.POPULAR
    assert ask(pipeline, world.warm_user).degradation == Degradation.POPULAR  # refused at once: "saturated"
    assert spy.calls == 0


def test_a_genuine_miss_still_takes_the_full_path(pipeline: RecommendationPipeline, world: World,
                                                  spy: FullPathSpy) -> None:
    other = str(world.events["user_id"].value_counts().index[1])  # no precomputed list
    answer = ask(pipeline, other)
    assert answer.degradation == Degradation.CANDIDATE_SCORES and spy.calls == 1  # no ranker in this world
    assert ask(pipeline, world.warm_user).cached and spy.calls == 1  # and a hit is the cached path


def late(user: str, spent_s: float = 1.0) -> RecommendationRequest:
    """A request received `spent_s` ago: past the default share (0.5 of 200 ms)."""
    return RecommendationRequest(user, n=10, received_at=time.monotonic() - spent_s)


def test_a_late_request_without_a_list_answers_popular(pipeline: RecommendationPipeline, world: World,
                                                       spy: FullPathSpy) -> None:
    other = str(world.events["user_id"].value_counts().index[1])
    before = busy("deadline")
    answer = pipeline.recommend(late(other))
    assert answer.degradation == Degradation.POPULAR and answer.items and spy.calls == 0
    assert busy("deadline") == before + 1
    on_time = pipeline.recommend(late(other, spent_s=0.0))
    assert on_time.degradation == Degradation.CANDIDATE_SCORES and spy.calls == 1


def test_a_late_request_with_a_list_gets_it(pipeline: RecommendationPipeline, world: World,
                                            spy: FullPathSpy) -> None:
    answer = pipeline.recommend(late(world.warm_user))
    assert answer.cached and answer.degradation == Degradation.FULL and spy.calls == 0  # its cached path anyway


def test_a_late_request_whose_arm_ranks_differently_gets_the_precomputed_rung(tmp_path: Path) -> None:
    world = local_world(tmp_path, experiments=EVERYONE_DIVERSE)
    pipeline = build_pipeline(world.settings)
    precompute(pipeline, [world.warm_user], k=20)
    spy = FullPathSpy(pipeline)
    pipeline._full_path = spy  # type: ignore[method-assign]
    assert ask(pipeline, world.warm_user).degradation == Degradation.CANDIDATE_SCORES  # on time: ranked live
    answer = pipeline.recommend(late(world.warm_user))
    assert answer.degradation == Degradation.PRECOMPUTED and not answer.cached and spy.calls == 1
    pipeline.close()
