"""The experiment analysis validated by simulation: simulated users get what the real API serves (over a loopback
socket) and click by the synthetic generator's ground-truth tastes.

The served world is the serving tests' tiny one (tests/bento_services/pipeline_data.py) with 800 users; its item
vectors are category-aligned, so the candidate order (no ranker: `candidate_scores`) follows each user's taste and
stands in for the trained ranking. Experiment `ranking`: control is that ranking, `shuffled` serves the same items
in random order. bench/experiment_validation.py runs the same checks big, the A/A over 200 runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bento_services.api.http import app_from_settings
from bento_services.pipeline.assignment import assign
from monitoring import attribution
from monitoring.experiments import analyze
from monitoring.simulate import ClickModel, SimulationResult, TasteAffinity, redraw, simulate_day
from recsys.settings import ExperimentVariant, Settings
from tests.bento_services.conftest import api_settings
from tests.bento_services.pipeline_data import build_world
from tests.conftest import make_settings

USERS = 800
SHUFFLED = ExperimentVariant(name="shuffled", buckets=(50, 100), experiment="ranking", shuffle=True)


@dataclass
class Day:
    settings: Settings
    users: list[str]
    affinity: TasteAffinity
    result: SimulationResult
    served: attribution.Served


def with_experiments(settings: Settings, *variants: ExperimentVariant) -> Settings:
    return settings.model_copy(update={"serving": settings.serving.model_copy(update={"experiments": list(variants)})})


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    """One simulated visit of each of the world's users through the API, clicks, purchases and ratings posted."""
    tmp_path = tmp_path_factory.mktemp("simulated")
    settings = with_experiments(api_settings(make_settings("local", tmp_path)), SHUFFLED)
    world = build_world(settings, tmp_path, users=USERS, interactions=USERS * 30)
    users = sorted(world.events["user_id"].astype(str).unique())
    affinity = TasteAffinity.from_ground_truth(tmp_path / "synthetic")
    result = simulate_day(settings, app_from_settings(settings), users, n=20, seed=1, affinity=affinity,
                          views=False, show_progress=False)
    yield Day(settings, users, affinity, result, attribution.load(settings))


def test_every_answer_is_logged_and_every_posted_event_attributed_to_its_impression(day: Day) -> None:
    assert day.result.failed == 0 and len(day.result.answers) == len(day.users)
    assert day.result.logged == len(day.result.answers)
    log, events = day.served.log, day.served.events
    assert set(log["request_id"]) == set(day.result.request_ids)
    expected = {u: assign(u, day.settings.serving.experiments).name for u in day.users}
    assert dict(zip(log["user_id"], log["variant"])) == expected
    assert len(events) == day.result.events and events["request_id"].notna().all()
    assert events["action_type"].value_counts().to_dict() == dict(day.result.actions)
    # The shuffled arm serves the same items as its ranking would, in another order: ranks are renumbered.
    shuffled = log[log["variant"] == "shuffled"]
    assert (shuffled["item_ids"].map(len) == 20).all() and (shuffled["scores"].map(lambda s: list(s) != sorted(
        s, reverse=True))).mean() > 0.9


def test_the_trained_ranking_beats_the_shuffled_one_significantly(day: Day) -> None:
    result = analyze(day.served, day.settings, "ranking")
    mrr, ctr = result.comparisons["shuffled"]["mrr"], result.comparisons["shuffled"]["ctr"]
    assert mrr["significant"] and mrr["high"] < 0, mrr  # a lower rank for the first click, beyond noise
    assert ctr["diff"] < 0 and ctr["relative"] < -0.05, ctr  # the same items lower down get fewer clicks
    assert not result.ratio_check.mismatch and result.ok
    assert result.arms["control"]["conversion"]["value"] > 0  # purchases and good ratings came through


def test_an_aa_split_of_the_same_answers_is_rarely_significant(day: Day) -> None:
    """40 runs: the served answers with a fresh 50/50 split of users and fresh clicks (the bench runs 200)."""
    rng = np.random.default_rng(7)
    aa = with_experiments(day.settings, ExperimentVariant(name="B", buckets=(0, 50), experiment="aa"))
    p_values, mismatches = [], 0
    for _ in range(40):
        found = analyze(redraw(day.served.log, day.affinity, rng, {"control": 0.5, "B": 0.5}), aa, "aa")
        p_values.append(found.comparisons["B"]["ctr"]["p_value"])
        mismatches += found.ratio_check.mismatch
    false_positives = float(np.mean(np.array(p_values) < 0.05))
    assert false_positives <= 0.2, p_values  # 0.05 expected; 10 or more of 40 has probability below 2e-4
    assert np.median(p_values) > 0.25 and mismatches == 0


def test_a_planted_55_45_split_trips_the_ratio_check(day: Day) -> None:
    """Served with `shuffled` on buckets 45..99 while the analysis is told 50..99: a broken assignment."""
    planted = with_experiments(day.settings, SHUFFLED.model_copy(update={"buckets": (45, 100)}))
    since = datetime.now(UTC)
    newcomers = [f"newcomer-{k}" for k in range(2500)]  # cold start answers: no clicks needed for the ratio
    result = simulate_day(planted, app_from_settings(planted), newcomers, n=5, affinity=day.affinity,
                          clicks=ClickModel(scale=0.0, floor=0.0), views=False, show_progress=False)
    assert result.logged == len(newcomers)
    served = attribution.load(planted, since=since)
    assert set(served.log["user_id"]) == set(newcomers)
    shares = served.log["variant"].value_counts(normalize=True)
    assert shares["shuffled"] == pytest.approx(0.55, abs=0.03)
    found = analyze(served, day.settings, "ranking")
    assert found.ratio_check.mismatch and found.ratio_check.p_value < 1e-3 and not found.ok
    assert not analyze(served, planted, "ranking").ratio_check.mismatch  # told the truth, the split is sound


def test_a_simulated_day_in_the_past_is_answered_and_logged_at_its_moments(tmp_path: Path) -> None:
    settings = with_experiments(api_settings(make_settings("local", tmp_path), allow_as_of=True), SHUFFLED)
    world = build_world(settings, tmp_path, users=40)
    start = datetime(2026, 1, 12, tzinfo=UTC)  # the day after the world's ten days of events
    users = sorted(world.events["user_id"].astype(str).unique())
    result = simulate_day(settings, app_from_settings(settings), users, n=10, visits_per_user=2.0, start=start,
                          ground_truth=tmp_path / "synthetic", show_progress=False)
    assert result.failed == 0 and result.logged == len(result.answers) > len(users)
    served = attribution.load(settings, since=start, until=start + timedelta(days=1))
    moments = {a.request_id: pd.Timestamp(a.at).floor("ms") for a in result.answers}
    assert dict(zip(served.log["request_id"], served.log["served_at"])) == moments
    assert served.log["served_at"].is_monotonic_increasing  # sent in time order over the day
    events = served.events
    assert len(events) == result.events and result.actions["view"] > result.actions["click"] > 0
    after = pd.to_datetime(events["event_time"], utc=True) - pd.to_datetime(events["served_at"], utc=True)
    assert events["request_id"].notna().all() and after.between(pd.Timedelta(0), pd.Timedelta(minutes=1)).all()
