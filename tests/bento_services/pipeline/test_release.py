"""Blue-green releases in one serving pipeline under concurrent requests: a canary published beside stable,
promoted, rolled back; a broken canary; an instant rollback."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from bento_services.pipeline.batch import batch_settings
from bento_services.pipeline.contracts import Degradation, RecommendationRequest, RecommendationResponse
from bento_services.pipeline.deployments import Rollout, release_bucket
from bento_services.pipeline.pipeline import RecommendationPipeline, build_pipeline
from bento_services.pipeline.upkeep import ReleaseLoadError
from recsys.release import Release, Version, read_release, write_release
from recsys.settings import Settings
from tests.bento_services.pipeline_data import VERSION, FakeRanker, World, build_world, new_version, with_features
from tests.conftest import make_settings

STABLE, CANARY = Version(VERSION, "r1"), Version("v2", "r2")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(make_settings("local", tmp_path), tmp_path, users=120)


def quick(settings: Settings) -> Settings:
    """Batch budgets (a busy test machine never degrades an answer) and a release poll of 50 ms."""
    settings = batch_settings(settings)
    return settings.model_copy(update={"serving": settings.serving.model_copy(update={"release_poll_seconds": 0.05})})


def serving(world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch,
            ranker: FakeRanker | None = None) -> RecommendationPipeline:
    write_release(settings.data_path, Release(STABLE if ranker is not None else Version(VERSION)))
    pipeline = build_pipeline(settings, ranker=ranker)
    monkeypatch.setattr(pipeline, "load_ranker", FakeRanker)  # the model store's rankers: fakes by version
    return pipeline


def wait_for(condition: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "serving did not follow the release record in time"
        time.sleep(0.02)


def version_of(answer: RecommendationResponse) -> Version:
    return Version(answer.candidates_version, answer.model_version)


def test_a_canary_under_load_is_promoted_then_rolled_back_and_every_answer_names_one_version(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = quick(with_features(world, tmp_path))
    pipeline = serving(world, settings, monkeypatch, FakeRanker("r1"))
    new_version(world, "v2")
    users = sorted(str(u) for u in world.events["user_id"].unique())
    answered: list[tuple[str, Rollout | None, RecommendationResponse]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def load(offset: int) -> None:
        while not stop.is_set():
            for user in users[offset:] + users[:offset]:
                before = pipeline.rollout
                try:
                    answer = pipeline.recommend(RecommendationRequest(user, n=5))
                except BaseException as exc:  # noqa: BLE001 - every failure is the test's finding
                    errors.append(exc)
                    continue
                # The rollout the request started on, when no swap happened while it ran.
                answered.append((user, before if pipeline.rollout is before else None, answer))

    threads = [threading.Thread(target=load, args=(k * 40,), daemon=True) for k in range(3)]
    for thread in threads:
        thread.start()
    try:
        record = read_release(settings.data_path)
        assert record is not None
        for change, share in ((lambda r: r.with_canary(CANARY, 5), 5), (lambda r: r.promoted(), 50),
                              (lambda r: r.rolled_back(), 0)):
            record = change(record)
            write_release(settings.data_path, record)
            wait_for(lambda s=share: pipeline.rollout.share == s)
            seen = len(answered)
            wait_for(lambda n=seen: len(answered) >= n + 2 * len(users))  # two rounds of every user on it
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    pipeline.close()

    assert errors == []
    assert {version_of(a) for _, _, a in answered} == {STABLE, CANARY}, "exactly one of the two versions each"
    assert all(a.degradation == Degradation.FULL for _, _, a in answered)
    canary_users = {u for u in users if release_bucket(u) < 50}
    assert 0 < len(canary_users) < len(users)
    for share in (5, 50):
        during = [(u, a) for u, rollout, a in answered if rollout is not None and rollout.share == share]
        assert during, f"answers while the canary had {share}%"
        for user, answer in during:
            assert version_of(answer) == (CANARY if release_bucket(user) < share else STABLE), user
        if share == 50:
            assert {u for u, a in during if version_of(a) == CANARY} == canary_users
    after = [a for _, rollout, a in answered if rollout is not None and rollout.canary is None]
    assert after and version_of(after[-1]) == STABLE


def test_a_canary_that_does_not_load_leaves_stable_serving(world: World, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    settings = quick(world.settings)
    pipeline = serving(world, settings, monkeypatch)
    record = read_release(settings.data_path)
    assert record is not None
    write_release(settings.data_path, record.with_canary(Version("gone", "r2"), 50))  # its folder missing
    with pytest.raises(ReleaseLoadError, match="gone"):
        pipeline.follow_release()
    with caplog.at_level(logging.WARNING, logger="bento_services.pipeline.upkeep"):
        wait_for(lambda: "following the release failed" in caplog.text)  # the watch logs it and goes on
    assert pipeline.rollout.canary is None
    for user in sorted(str(u) for u in world.events["user_id"].unique()):
        assert pipeline.recommend(RecommendationRequest(user, n=5)).candidates_version == VERSION
    pipeline.close()


def test_a_rollback_swaps_back_at_once_without_loading_anything(world: World,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings = world.settings  # no watch thread running: the test drives `follow_release`
    new_version(world, "v2")
    write_release(settings.data_path, Release(Version(VERSION)).with_canary(Version("v2"), 50))
    pipeline = build_pipeline(settings, candidates_dir=world.folder)
    assert pipeline.follow_release() and pipeline.rollout.canary is not None
    user = next(u for u in map(str, world.events["user_id"].unique()) if release_bucket(u) < 50)
    assert pipeline.recommend(RecommendationRequest(user, n=5)).candidates_version == "v2"

    record = read_release(settings.data_path)
    assert record is not None
    write_release(settings.data_path, record.rolled_back("test"))
    monkeypatch.setattr(pipeline, "_load", lambda version: pytest.fail(f"rollback loaded {version}"))
    started = time.perf_counter()
    assert pipeline.follow_release()
    assert time.perf_counter() - started < 0.5 and pipeline.rollout.canary is None
    assert pipeline.recommend(RecommendationRequest(user, n=5)).candidates_version == VERSION
    pipeline.close()


def test_two_loads_of_one_version_are_two_deployments_and_comparing_rollouts_never_raises(world: World) -> None:
    """A version loaded twice (the watcher and a command at once) holds equal but distinct tables; rollouts compare
    by the deployments they hold, never by the tables' DataFrames (whose truth value raises)."""
    new_version(world, "v2")
    pipeline = build_pipeline(world.settings, candidates_dir=world.folder)
    first, second = pipeline._load(Version("v2")), pipeline._load(Version("v2"))
    stable = pipeline.rollout.stable
    assert Rollout(stable, first, 50) == Rollout(stable, first, 50)
    assert Rollout(stable, first, 50) != Rollout(stable, second, 50)
    pipeline.close()
