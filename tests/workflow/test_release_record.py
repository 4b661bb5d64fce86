"""The release record's transitions, its atomic file, publication as a canary, and the guardrails that promote or
roll back from the serving log."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys import serving_log
from recsys.errors import InvalidInputError
from recsys.models.item_index import ItemIndex
from recsys.release import Release, Version, read_release, release_path, write_release
from recsys.settings import Settings
from tests.conftest import make_settings
from workflow.registry import candidate_versions
from workflow.release import Figures, check, figures, judge, publish, rollback

A, B, C = Version("a", "ra"), Version("b", "rb"), Version("c", "rc")


def test_a_canary_goes_5_50_then_stable_and_rollbacks_return_to_what_served() -> None:
    release = Release(A).with_canary(B, 5)
    assert (release.stable, release.canary, release.share) == (A, B, 5)
    release = release.promoted()
    assert release.share == 50 and release.canary == B
    release = release.promoted()
    assert (release.stable, release.canary, release.share, release.previous) == (B, None, 0, (A,))
    dropped = release.with_canary(C, 50).rolled_back("bad")
    assert (dropped.stable, dropped.canary) == (B, None) and dropped.history[-1]["reason"] == "bad"
    back = dropped.rolled_back()  # no canary: the previous stable version
    assert (back.stable, back.previous) == (A, ())
    with pytest.raises(InvalidInputError):
        back.rolled_back()
    with pytest.raises(InvalidInputError):
        back.promoted()
    assert Release(A).with_canary(B, 0).stable == B, "share 0: straight to stable"
    with pytest.raises(InvalidInputError):
        Release(A).with_canary(B, 101)


def test_the_record_round_trips_and_is_replaced_whole(tmp_path: Path) -> None:
    assert read_release(tmp_path) is None
    release = Release(A).with_canary(B, 5).promoted()
    write_release(tmp_path, release)
    assert read_release(tmp_path) == release
    assert [p.name for p in release_path(tmp_path).parent.iterdir()] == ["RELEASE.json"], "no temp file left"


def test_judge_promotes_when_guardrails_hold_rolls_back_when_they_break_and_holds_without_traffic(
        tmp_path: Path) -> None:
    config = make_settings("local", tmp_path).pipeline
    stable = Figures(500, 0.01, 40.0, 500)
    assert judge(stable, Figures(500, 0.02, 50.0, 500), config).action == "promote"
    broken = judge(stable, Figures(500, 0.20, 50.0, 500), config)
    assert broken.action == "rollback" and "degraded share" in broken.breaches[0]
    slow = judge(stable, Figures(500, 0.01, 90.0, 500), config)
    assert slow.action == "rollback" and "p99" in slow.breaches[0]
    assert judge(stable, Figures(10, 0.9, 500.0, 10), config).action == "hold"


def test_latency_is_compared_on_computed_answers_and_held_to_the_budget_when_stable_has_too_few() -> None:
    """Stable's warm users get precomputed lists and its live answers are cold starts: neither is a baseline for
    a canary, which computes every answer."""
    config = Settings.load().pipeline.model_copy(update={"guardrail_min_requests": 20})
    served = pd.DataFrame({"degradation": ["full"] * 90 + ["cold_start"] * 10, "cached": [True] * 90 + [False] * 10,
                           "latency_ms": [1.0] * 90 + [8.0] * 10})
    stable = figures(served)
    assert (stable.requests, stable.computed, stable.p99_ms) == (100, 0, 0.0)
    canary = figures(pd.DataFrame({"degradation": ["full"] * 30, "cached": [False] * 30, "latency_ms": [30.0] * 30}))
    assert (canary.computed, canary.p99_ms) == (30, 30.0)
    assert judge(stable, canary, config, budget_ms=200.0).action == "promote"
    over = judge(stable, replace(canary, p99_ms=250.0), config, budget_ms=200.0)
    assert over.action == "rollback" and "over the request budget of 200 ms" in over.breaches[0]


def version_folder(settings: Settings, name: str) -> Version:
    folder = settings.data_path / "models" / name
    vectors = np.eye(4, dtype=np.float32)
    ItemIndex.build(vectors, ["i1", "i2", "i3", "i4"], model_version=name, data_start=datetime(2024, 1, 1, tzinfo=UTC),
                    data_end=datetime(2024, 2, 1, tzinfo=UTC), version=name).save(folder / "item_index")
    np.savez(folder / "user_vectors.npz", users=np.array(["u1"]), vectors=vectors[:1],
             data_end=np.array("2024-02-01T00:00:00+00:00"))
    return Version(name, None)


def answers(candidates: str, count: int, degraded: int, latency_ms: float) -> list[dict[str, object]]:
    time.sleep(0.005)  # served after the record's last change, which the window starts at
    now = int(datetime.now(UTC).timestamp() * 1000)
    return [{"request_id": f"{candidates}-{k}-{now}", "served_at": now, "user_id": f"u{k}", "variant": "control",
             "bucket": 0, "model_version": candidates, "candidates_version": candidates,
             "degradation": "popular" if k < degraded else "full", "cached": False, "latency_ms": latency_ms}
            for k in range(count)]


def test_publication_as_a_canary_then_the_guardrails_promote_and_roll_back(tmp_path: Path) -> None:
    settings = make_settings("local", tmp_path)
    settings = settings.model_copy(update={"pipeline": settings.pipeline.model_copy(
        update={"guardrail_min_requests": 20})})
    first, second, third = (version_folder(settings, n) for n in ("one", "two", "three"))
    quiet = lambda _: None  # noqa: E731
    publish(settings, first, 5, None, quiet)  # nothing served yet: straight to stable
    current = settings.data_path / "models" / "CURRENT"
    assert current.read_text() == "one"
    canary = publish(settings, second, 5, first, quiet)
    assert (canary.stable, canary.canary, canary.share) == (first, second, 5)
    assert current.read_text() == "one", "a canary leaves models/CURRENT (the stable version) alone"
    states = {m.version: m.state for m in candidate_versions(settings)}
    assert states == {"one": "serving", "two": "canary 5%", "three": "retired"}

    assert check(settings, progress=quiet)[0] == "hold"  # no traffic yet
    serving_log.write(settings.lake_path, answers("one", 40, 0, 30.0) + answers("two", 40, 0, 32.0))
    action, verdict, promoted = check(settings, progress=quiet)
    assert action == "promote" and verdict is not None and verdict.canary.requests == 40
    assert promoted is not None and promoted.share == 50
    # The window starts when the canary got its share: the earlier answers are not judged again.
    time.sleep(0.005)
    assert check(settings, progress=quiet)[0] == "hold"

    publish(settings, third, 5, None, quiet)  # a newer canary replaces "two"
    serving_log.write(settings.lake_path, answers("one", 40, 0, 30.0) + answers("three", 40, 30, 30.0))
    action, verdict, after = check(settings, progress=quiet)
    assert action == "rollback" and after is not None and after.canary is None
    assert after.stable == first and "guardrails" in after.history[-1]["reason"]

    assert publish(settings, second, 100, None, quiet).stable == second  # 100: straight to stable
    assert current.read_text() == "two"
    assert rollback(settings, progress=quiet).stable == first
    assert current.read_text() == "one", "stable back on the previous version, CURRENT with it"
