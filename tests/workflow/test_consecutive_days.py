"""Two consecutive simulated days of the daily pipeline, then a broken third (issue 12's "done means"), on one small
synthetic world and the real steps (Spark, Feast, two-tower, ranker, gate, release): day 1 publishes the first
version, day 2 imports the next day and publishes a version the gate found not worse than the one in service,
as a 5% canary that the guardrails promote on served answers until it is stable, and day 3's model, its item
vectors shuffled, is rejected naming the metric while serving stays as it was. Each day's two-tower and ranker runs
are in experiment tracking (MLflow, the local store of the test's folder) with the gate's verdict and, once
released, their release state.

The training is made small (`pipeline.*` below) so the module runs in a few minutes on 2 cores;
`bench/consecutive_days.py` runs the same days on a larger world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from bench.consecutive_days import World, broken_steps, make_world, rehearsal_settings, roll_out
from ingestion.synthetic import SyntheticConfig
from recsys.release import read_release, release_path
from recsys.settings import Settings
from tests.conftest import make_settings, own_feature_repo
from training.tracking import list_versions
from workflow.daily import RunOutcome, run_pipeline

K = 20
# Retraining alone moves the gated metrics of a world this small by several percent (a held-out day of a few hundred
# users): the gate's tolerance is widened to 10% so that day 2 passes for its data, not for its luck. A shuffled
# index loses far more (day 3).
SMALL = {"epochs": 8, "ranker_candidate_epochs": 1, "ranker_epochs": 2, "ranker_members": 1, "eval_users": 1000,
         "latency_requests": 20, "precompute_k": 20, "k": K, "metric_tolerance": 0.1}


@dataclass(frozen=True)
class Days:
    settings: Settings
    world: World
    users: list[str]


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> Days:
    """400 users with concentrated tastes over 200 items, eight days (the gate test's kind of world: a model that
    learns the tastes beats popularity there)."""
    folder = tmp_path_factory.mktemp("days")
    settings = rehearsal_settings(own_feature_repo(make_settings("local", folder), folder), **SMALL)
    world = make_world(SyntheticConfig(users=400, items=200, interactions=16_000, days=8, categories=8, seed=3,
                                       zipf_exponent=0.6, taste_concentration=0.1), folder / "world")
    users = sorted(pd.read_parquet(world.first / "users.parquet")["user_id"].astype(str))
    return Days(settings, world, users)


@pytest.fixture(scope="module")
def day1(days: Days) -> RunOutcome:
    return run_pipeline(days.settings, import_dir=days.world.first, progress=print)


@pytest.fixture(scope="module")
def day2(days: Days, day1: RunOutcome) -> tuple[RunOutcome, list[dict[str, Any]]]:
    outcome = run_pipeline(days.settings, import_dir=days.world.last, progress=print)
    return outcome, roll_out(days.settings, days.users) if outcome.state == "published" else []


@pytest.fixture(scope="module")
def day3(days: Days, day2: tuple[RunOutcome, list[dict[str, Any]]]) -> tuple[RunOutcome, dict[str, bytes]]:
    served = {path.name: path.read_bytes() for path in serving_files(days.settings)}
    return run_pipeline(days.settings, steps=broken_steps(), progress=print), served


def serving_files(settings: Settings) -> list[Path]:
    return [release_path(settings.data_path), settings.data_path / "models" / "CURRENT"]


def manifest(outcome: RunOutcome) -> dict[str, Any]:
    return json.loads(outcome.manifest.read_text())


def version_of(outcome: RunOutcome) -> str:
    return str(manifest(outcome)["steps"]["candidates"]["outputs"]["version"])


def test_day_one_publishes_the_first_version_as_stable(days: Days, day1: RunOutcome) -> None:
    assert (day1.state, day1.reasons) == ("published", [])
    release = read_release(days.settings.data_path)
    assert release is not None and release.canary is None
    assert release.stable.candidates == version_of(day1) == (days.settings.data_path / "models" / "CURRENT").read_text()
    assert release.stable.ranker == manifest(day1)["steps"]["ranker"]["versions"]["ranker"]


def test_day_two_passes_the_gate_against_day_one_and_goes_stable_through_the_canary(
        days: Days, day1: RunOutcome, day2: tuple[RunOutcome, list[dict[str, Any]]]) -> None:
    outcome, rollout = day2
    assert (outcome.state, outcome.reasons) == ("published", [])
    steps = manifest(outcome)["steps"]
    assert steps["lake"]["inputs"]["events_new_in_lake"] > 0
    assert steps["lake"]["outputs"]["held_out_day"].startswith(f"{days.world.last_day:%Y-%m-%d}")
    evaluation = json.loads((outcome.manifest.parent / "evaluation.json").read_text())
    assert evaluation["serving"]["version"] == version_of(day1)  # judged against what served
    tolerance = days.settings.pipeline.metric_tolerance
    for metric, serving in evaluation["serving"]["metrics"].items():
        if metric.startswith(("ann_recall", "candidate_", "ndcg")):
            assert evaluation["new"]["metrics"][metric] >= serving * (1 - tolerance), metric
    assert steps["publish"]["note"] == "canary to 5% of users"
    # The ranker's window lists come from a model warm-started from day 1's (saved in day 1's version folder).
    assert steps["ranker"]["inputs"]["history_warm_start"].endswith(f"{version_of(day1)}/ranker_history")
    assert steps["ranker"]["note"].startswith("warm start from "), steps["ranker"]["note"]
    assert manifest(day1)["steps"]["ranker"]["note"] == "from scratch"
    new = version_of(outcome)
    assert [(step["share"], step["action"]) for step in rollout] == [(5, "promote"), (50, "promote")], rollout
    assert all(step["answers"].get(new, 0) >= 20 for step in rollout)  # the canary answered at each share
    release = read_release(days.settings.data_path)
    assert release is not None and release.canary is None
    assert release.stable.candidates == new == (days.settings.data_path / "models" / "CURRENT").read_text()
    assert release.previous[-1].candidates == version_of(day1)  # kept for an instant rollback


def test_day_three_broken_model_is_rejected_naming_the_metric_and_serving_is_unchanged(
        days: Days, day3: tuple[RunOutcome, dict[str, bytes]]) -> None:
    outcome, served = day3
    assert outcome.state == "rejected"
    assert any(r.startswith(f"ann_recall@{K} ") and "below the serving version's" in r for r in outcome.reasons), \
        outcome.reasons
    steps = manifest(outcome)["steps"]
    assert steps["features"]["status"] == "skipped"  # the same lake as day 2: no Spark job
    assert steps["publish"]["status"] == "pending"
    assert {path.name: path.read_bytes() for path in serving_files(days.settings)} == served
    assert (days.settings.data_path / "models" / version_of(outcome) / "item_index").is_dir()  # kept to inspect


def test_each_day_records_its_runs_in_mlflow_with_the_gate_verdict_and_release_state(
        days: Days, day1: RunOutcome, day2: tuple[RunOutcome, list[dict[str, Any]]],
        day3: tuple[RunOutcome, dict[str, bytes]]) -> None:
    client = MlflowClient(days.settings.tracking_uri)
    recorded = {}
    for day, outcome in (("day1", day1), ("day2", day2[0]), ("day3", day3[0])):
        steps = manifest(outcome)["steps"]
        for step, kind in (("candidates", "two-tower"), ("ranker", "ranker")):
            outputs = steps[step]["outputs"]
            run = client.get_run(outputs["mlflow_run_id"]).data
            version = steps[step]["versions"][step]
            assert (run.tags["kind"], run.tags["version"], run.tags["pipeline_run"]) == (kind, version, outcome.run_id)
            assert "heldout/new/ndcg_at_10" in run.metrics and "heldout/popularity/ndcg_at_10" in run.metrics
            recorded[day, kind] = (run, outputs["mlflow_version"])
    expected = {"day1": ("passed", "retired"), "day2": ("passed", "stable"), "day3": ("rejected", None)}
    for (day, kind), (run, _) in recorded.items():
        assert (run.tags["gate"], run.tags.get("release")) == expected[day], (day, kind)
    day3_run = recorded["day3", "two-tower"][0]
    assert day3_run.tags["gate_reasons"] == "; ".join(day3[0].reasons)
    assert day3_run.tags["gate_compared_with"] == version_of(day2[0])
    assert f"heldout/serving/ann_recall_at_{K}" in day3_run.metrics
    warm_from = manifest(day2[0])["steps"]["candidates"]["outputs"]["warm_from"]
    assert recorded["day2", "two-tower"][0].params["start.warm_from"] == str(warm_from)  # the warm start's input
    registered = {v.version: v.tags.get("release") for v in list_versions(days.settings, "two-tower")}
    assert registered == {recorded[day, "two-tower"][1]: expected[day][1] for day in ("day1", "day2", "day3")}
