"""The experiment analysis: its statistics against independent computations (statsmodels, a user bootstrap,
plain loops over a constructed log), the ratio check, the guardrails, the report files and the CLI's exit code."""

from __future__ import annotations

import base64
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats import proportion
from typer.testing import CliRunner, Result

from bento_services.pipeline.assignment import assign
from cli.app import app
from monitoring.attribution import Served, attribute, impressions
from monitoring.experiments import analyze, arms_of
from monitoring.stats import difference, ratio, sample_ratio
from recsys import serving_log
from recsys.backends import open_lake
from recsys.errors import ConfigError
from recsys.settings import ExperimentVariant, Settings
from tests.conftest import make_settings

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
Row = dict[str, Any]  # a serving-log record or an event, as the API would send them


# -- statistics -------------------------------------------------------------------------------------------

def test_one_impression_per_user_reduces_to_the_two_proportion_wald_test() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(6000) < 0.10, rng.random(5000) < 0.12
    est_a, est_b = ratio(a, np.ones(len(a))), ratio(b, np.ones(len(b)))
    low, high = proportion.proportion_confint(a.sum(), len(a), alpha=0.05, method="normal")
    assert (est_a.low, est_a.high) == pytest.approx((low, high), rel=1e-3)
    found = difference(est_b, est_a)
    expected = proportion.test_proportions_2indep(b.sum(), len(b), a.sum(), len(a), method="wald", compare="diff")
    assert found.diff == pytest.approx(b.mean() - a.mean())
    assert found.z == pytest.approx(expected.statistic, rel=1e-3)
    assert found.p_value == pytest.approx(expected.pvalue, rel=1e-2)


def clustered_users(rng: np.random.Generator, n: int, mean_ctr: float) -> tuple[np.ndarray, np.ndarray]:
    """Users with their own click rate (beta around mean_ctr) and their own number of impressions."""
    shown = rng.integers(1, 60, size=n)
    rates = rng.beta(0.5, 0.5 * (1 - mean_ctr) / mean_ctr, size=n)
    return rng.binomial(shown, rates).astype(float), shown.astype(float)


def test_the_delta_method_matches_a_bootstrap_over_users_where_the_binomial_error_is_too_small() -> None:
    rng = np.random.default_rng(2)
    clicks, shown = clustered_users(rng, 1500, 0.08)
    found = ratio(clicks, shown)
    assert found.value == pytest.approx(clicks.sum() / shown.sum())
    draws = rng.integers(0, len(clicks), size=(3000, len(clicks)))
    boot = clicks[draws].sum(axis=1) / shown[draws].sum(axis=1)
    assert found.se == pytest.approx(boot.std(ddof=1), rel=0.08)
    naive = math.sqrt(found.value * (1 - found.value) / shown.sum())
    assert naive < 0.6 * found.se  # impressions of one user are correlated: the binomial error understates it


def test_the_ratio_check_is_the_square_of_the_one_sample_proportion_test() -> None:
    for a, b in ((1100, 900), (1020, 980)):
        check = sample_ratio({"control": a, "B": b}, {"control": 0.5, "B": 0.5})
        z, p = proportion.proportions_ztest(a, a + b, value=0.5, prop_var=0.5)
        assert (check.chi2, check.p_value) == pytest.approx((z * z, p), rel=1e-9)
    assert sample_ratio({"control": 1100, "B": 900}, {"control": 0.5, "B": 0.5}).mismatch  # 55/45 of 2,000
    assert not sample_ratio({"control": 1020, "B": 980}, {"control": 0.5, "B": 0.5}).mismatch
    three = sample_ratio({"control": 502, "B": 251, "C": 247}, {"control": 0.4, "B": 0.2, "C": 0.2})
    assert three.expected == pytest.approx({"control": 500.0, "B": 250.0, "C": 250.0})
    assert not three.mismatch


# -- arms ---------------------------------------------------------------------------------------------------

def variants(*rows: tuple[str, int, int, str]) -> list[ExperimentVariant]:
    return [ExperimentVariant(name=n, buckets=(s, e), experiment=x) for n, s, e, x in rows]


def test_arms_take_their_shares_from_the_buckets_the_assignment_gives_them() -> None:
    experiments = variants(("B", 0, 30, "exp"), ("C", 20, 50, "exp"), ("other", 50, 60, "else"))
    arms = {a.name: a.share for a in arms_of(experiments, "exp")}
    counts = pd.Series([assign(f"user-{k}", experiments).name for k in range(20_000)]).value_counts(normalize=True)
    assert set(arms) == {"control", "B", "C"}
    for name, share in arms.items():
        assert share == pytest.approx(counts[name], abs=0.015)  # C loses the buckets B took first
    with pytest.raises(ConfigError, match="no experiment named 'missing'.*exp"):
        arms_of(experiments, "missing")


# -- the analysis over a constructed log ----------------------------------------------------------------------

def experiment_settings(tmp_path: Path) -> Settings:
    settings = make_settings("local", tmp_path)
    serving = settings.serving.model_copy(update={"experiments": variants(("B", 0, 50, "exp"),
                                                                          ("other", 50, 60, "else"))})
    return settings.model_copy(update={"serving": serving})


def answer(request_id: str, user: str, variant: str, at: datetime, items: list[str], latency: float = 20.0,
           degradation: str = "full") -> Row:
    return {"request_id": request_id, "served_at": int(at.timestamp() * 1000), "user_id": user, "variant": variant,
            "bucket": 0, "model_version": "r1", "candidates_version": "c1", "degradation": degradation,
            "cached": False, "latency_ms": latency, "stage_ms": {}, "item_ids": items,
            "scores": [1.0] * len(items), "sources": ["ann"] * len(items), "explanations": ["x"] * len(items),
            "features": None}


def event(user: str, item: str, at: datetime, action: str, request_id: str | None,
          value: float | None = None) -> Row:
    return {"event_id": f"{user}-{item}-{action}-{at.timestamp()}", "user_id": user, "item_id": item,
            "event_time": pd.Timestamp(at), "action_type": action, "value": value, "session_id": None,
            "context": json.dumps({"request_id": request_id}) if request_id else None}


def constructed(rng: np.random.Generator) -> tuple[list[Row], list[Row]]:
    """Answers of 5 items and random clicks, purchases and ratings (some twice, some late, some unattributed)."""
    answers, events = [], []
    for k in range(120):
        user, arm = f"u{k}", ("B" if k % 2 else "control")
        arm = "other" if k % 10 == 0 else arm
        for visit in range(int(rng.integers(1, 4))):
            at = T0 + timedelta(minutes=90 * visit + k)
            rid, items = f"r{k}-{visit}", [f"i{(k + j) % 40}" for j in range(5)]
            slow = arm == "B" and visit == 0 and k % 3 == 0
            answers.append(answer(rid, user, arm, at, items, latency=900.0 if slow else 20.0,
                                  degradation="candidate_scores" if arm == "B" and k % 4 == 1 else "full"))
            for rank, item in enumerate(items, start=1):
                if rng.random() < 0.5 / rank:
                    clicked_at = at + timedelta(seconds=rank)
                    events.append(event(user, item, clicked_at, "click", rid if rng.random() < 0.7 else None))
                    if rng.random() < 0.2:  # the same impression clicked again
                        events.append(event(user, item, clicked_at + timedelta(seconds=1), "click", rid))
                    late = timedelta(minutes=45 if rng.random() < 0.3 else 5)
                    if rng.random() < 0.3:
                        events.append(event(user, item, at + late, "purchase", rid))
                    if rng.random() < 0.3:
                        events.append(event(user, item, at + late, "rate", rid, float(rng.choice([2.0, 3.5, 4.0]))))
            events.append(event(user, "never-shown", at + timedelta(seconds=9), "click", None))
    answers.append(answer("cross", "u1", "control", T0 + timedelta(days=1), ["i1"]))  # u1 is in B: crossed over
    return answers, events


def expected_by_arm(answers: list[Row], events: list[Row], window: timedelta
                    ) -> dict[str, dict[str, float]]:
    """Plain loops over the constructed rows: the numbers the analysis must find."""
    first_arm: dict[str, str] = {}
    for row in sorted(answers, key=lambda r: r["served_at"]):
        first_arm.setdefault(str(row["user_id"]), str(row["variant"]))
    totals: dict[str, dict[str, float]] = {}
    for row in answers:
        arm = str(row["variant"])
        if arm == "other" or first_arm[str(row["user_id"])] != arm:
            continue
        items = list(row["item_ids"])
        served_at = pd.Timestamp(int(row["served_at"]), unit="ms", tz="UTC")
        mine = [e for e in events if e["user_id"] == row["user_id"] and e["item_id"] in items]
        ours = [e for e in mine if named(e) == row["request_id"] or (named(e) is None and latest(answers, e) is row)]
        clicked = {e["item_id"] for e in ours if e["action_type"] == "click"}
        converted = any(e["action_type"] == "purchase" or (e["action_type"] == "rate" and e["value"] >= 4)
                        for e in ours if timedelta(0) <= e["event_time"] - served_at <= window)
        ranks = [items.index(i) + 1 for i in clicked]
        t = totals.setdefault(arm, {"impressions": 0, "clicked": 0, "requests": 0, "converted": 0, "rr": 0.0})
        t["impressions"] += len(items)
        t["clicked"] += len(clicked)
        t["requests"] += 1
        t["converted"] += converted
        t["rr"] += 1 / min(ranks) if ranks else 0.0
    return totals


def named(event_row: Row) -> str | None:
    return json.loads(str(event_row["context"]))["request_id"] if event_row["context"] else None


def latest(answers: list[Row], e: Row) -> Row | None:
    at = pd.Timestamp(e["event_time"]).value // 1_000_000
    shown = [a for a in answers if a["user_id"] == e["user_id"] and e["item_id"] in a["item_ids"]
             and at - 30 * 60_000 <= a["served_at"] <= at]
    return max(shown, key=lambda a: a["served_at"], default=None)


def served_from(answers: list[Row], events: list[Row], window: timedelta) -> Served:
    log = serving_log.to_table(answers).to_pandas()
    shown = impressions(log)
    return Served(log, shown, attribute(shown, pd.DataFrame(events), window))


def test_the_analysis_finds_what_plain_loops_count(tmp_path: Path) -> None:
    settings = experiment_settings(tmp_path)
    window = timedelta(minutes=settings.monitoring.attribution_minutes)
    answers, events = constructed(np.random.default_rng(3))
    result = analyze(served_from(answers, events, window), settings, "exp")
    expected = expected_by_arm(answers, events, window)
    assert set(result.arms) == {"control", "B"} and result.crossover_users == 1
    for arm, t in expected.items():
        found = result.arms[arm]
        assert (found["requests"], found["impressions"]) == (t["requests"], t["impressions"])
        assert found["ctr"]["value"] == pytest.approx(t["clicked"] / t["impressions"])
        assert found["conversion"]["value"] == pytest.approx(t["converted"] / t["requests"])
        assert found["mrr"]["value"] == pytest.approx(t["rr"] / t["requests"])
        assert found["ctr"]["low"] < found["ctr"]["value"] < found["ctr"]["high"]
    assert result.arms["control"]["expected_share"] == pytest.approx(0.4)  # "other" holds 50..60
    ctr = result.comparisons["B"]["ctr"]
    assert ctr["diff"] == pytest.approx(result.arms["B"]["ctr"]["value"] - result.arms["control"]["ctr"]["value"])


def test_guardrails_flag_the_slow_and_degraded_variant_and_the_verdict_fails(tmp_path: Path) -> None:
    settings = experiment_settings(tmp_path)
    window = timedelta(minutes=settings.monitoring.attribution_minutes)
    answers, events = constructed(np.random.default_rng(4))
    result = analyze(served_from(answers, events, window), settings, "exp")
    b, control = result.guardrails["B"], result.guardrails["control"]
    b_rows = [a for a in answers if a["variant"] == "B"]
    assert b.degradation_share == pytest.approx(np.mean([a["degradation"] != "full" for a in b_rows]))
    assert control.degradation_share == 0 and control.p99_latency_ms == pytest.approx(20.0)
    assert b.p99_latency_ms > settings.monitoring.experiment_p99_latency_ms
    assert any("p99 latency" in line for line in b.broken) and any("degraded share" in line for line in b.broken)
    assert not control.broken and not result.ok
    relaxed = settings.model_copy(update={"monitoring": settings.monitoring.model_copy(update={
        "experiment_p99_latency_ms": 1000.0, "experiment_degradation_margin": 0.9})})
    assert analyze(served_from(answers, events, window), relaxed, "exp").ok


# -- the report and the command --------------------------------------------------------------------------------

def write_split(settings: Settings, control_users: int, b_users: int) -> None:
    """One answer of 3 items per user in the lake's serving log, a click on rank 1 for every third user."""
    answers, events = [], []
    for k in range(control_users + b_users):
        arm, at = ("control" if k < control_users else "B"), T0 + timedelta(seconds=k / 2)  # some on whole seconds
        answers.append(answer(f"r{k}", f"u{k}", arm, at, ["i1", "i2", "i3"], latency=10.0 + k % 50))
        if k % 3 == 0:
            events.append(event(f"u{k}", "i1", at + timedelta(seconds=5), "click", f"r{k}"))
    serving_log.write(settings.lake_path, answers)
    open_lake(settings).write_interactions(pd.DataFrame(events))


def run_report(tmp_path: Path, control_users: int, b_users: int) -> tuple[Result, Path]:
    config = tmp_path / "recsys.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n\n[[serving.experiments]]\nname = "B"\n'
                      'buckets = [0, 50]\nexperiment = "exp"\n')
    write_split(Settings.load(config_file=config), control_users, b_users)
    result = CliRunner().invoke(app, ["--config", str(config), "experiment", "report", "exp"])
    return result, Settings.load(config_file=config).reports_path


def test_the_command_writes_a_self_contained_report_and_exits_0_on_a_sound_split(tmp_path: Path) -> None:
    result, reports = run_report(tmp_path, 1010, 990)
    assert result.exit_code == 0, result.output
    assert "ratio check ok" in result.output and "guardrails ok" in result.output
    [folder] = [p for p in reports.iterdir() if p.is_dir()]
    data = json.loads((folder / "experiment_exp.json").read_text())
    assert data["arms"]["control"]["users"] == 1010 and data["arms"]["B"]["users"] == 990
    assert data["arms"]["B"]["ctr"]["value"] == pytest.approx(sum(1 for k in range(1010, 2000) if k % 3 == 0) / 2970)
    page = (folder / "experiment_exp.html").read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "delta method" in page and "src='http" not in page  # one file, nothing fetched
    verdict = json.loads((folder / "verdicts" / "experiment_exp.json").read_text())
    assert verdict["ok"] and verdict["files"] == ["experiment_exp.html", "experiment_exp.json"]


def test_a_planted_55_45_split_trips_the_ratio_check_and_the_command_exits_1(tmp_path: Path) -> None:
    result, reports = run_report(tmp_path, 1100, 900)
    assert result.exit_code == 1, result.output
    assert "ratio check MISMATCH" in result.output
    [folder] = [p for p in reports.iterdir() if p.is_dir()]
    assert json.loads((folder / "experiment_exp.json").read_text())["ratio_check"]["mismatch"]
    assert not json.loads((folder / "verdicts" / "experiment_exp.json").read_text())["ok"]


def test_an_unknown_experiment_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "recsys.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    result = CliRunner().invoke(app, ["--config", str(config), "experiment", "report", "nope"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "no experiment named 'nope'" in result.exception.message


def test_an_experiment_with_no_answers_yet_says_so(tmp_path: Path) -> None:
    from monitoring.experiment_report import report

    folder, verdict = report(experiment_settings(tmp_path), "exp")
    assert verdict.line == "experiment exp: no answers of its arms in the window (control, B)"
    assert (folder / "experiment_exp.html").stat().st_size > 0 and verdict.ok
