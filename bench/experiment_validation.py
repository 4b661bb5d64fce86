"""The experiment analysis (`recsys experiment report`) validated by simulation, big: the ranking against a
shuffled holdout shows a significant lift, an A/A test is significant in about 5% of runs, a planted 55/45
split trips the sample-ratio check.

The world: the synthetic generator (4,000 users with a latent taste over 20 categories, 1,000 items) imported
into the `local` stores; the candidate artifact is an item index of clustered vectors (one centre per
category, `bench.serving_world.item_vectors`) with each user's vector the mean of their items', so the served
ranking (candidate scores; no ranker is trained here) follows taste as a trained one would. Simulated users
(`monitoring.simulate`) get the real API's answers over a loopback socket and click by the generator's
ground-truth taste for each item's category (`TasteAffinity`), with a 1/rank position bias.

1. Lift: experiment `ranking`, control served the ranking and `shuffled` (buckets 50..99) the same 50 items in
   random order; every user visits once, in four simulated days (`as_of`), clicks, purchases and ratings
   posted back with the answer's request_id. The report is written as `recsys experiment report` writes it.
   Its power is then estimated over 50 redraws of the clicks on the same answers.
2. A/A: everyone served the ranking once (another simulated day, answers only). The cheap trick: instead of
   serving 200 days, each run re-draws the split (a fresh 50/50 assignment of users to `control` and `B`) and
   the clicks (from the same ground truth and click model) on those served answers. What is re-drawn is
   exactly what an A/A test's noise is made of (who lands in which arm, what they click); the lists, which
   don't depend on the arm, are served once. The false-positive rate is the share of runs with p < 0.05, per
   metric, beside an impression-level two-proportion z-test of CTR on the same runs (which ignores that one
   user's clicks are correlated) and the sample-ratio check's false alarms.
3. Planted split: served with `shuffled` on buckets 45..99 while the analysis is told 50..99.

Why 50 items: the served ranking merges five candidate sources (popularity and trending among them), so its
affinity falls slowly with rank (0.75 at the top, 0.61 at rank 20 here); shuffling 20 such items moved CTR
by 6% (power 62%), shuffling 50 by 12%.

Measured (4,000 users, two cores): lift CTR -12.8% (p 1e-7), MRR -13.4% (p 1e-6), conversion -12% (p 0.001),
power over 50 redraws 100% / 100% / 92%. A/A over 200 runs: false-positive rate CTR 4.5%, conversion 2.5%,
MRR 6.0%, all inside the 2%-8% a calibrated test shows 95% of the time; the ratio check raised 2 false alarms
in 200 (0.2 expected; its calibration checked separately at 0.13% over 20,000 splits). The impression-level
CTR test was calibrated too here (4.5%): with one visit per user and a 3% CTR, one user's clicks are hardly
correlated; the unit tests show where it fails (users with their own rates and many impressions). Planted
55/45: 2,173 against 1,770 users, chi-square 41, p 1e-10, flagged.

    python -m bench.experiment_validation        # ~11 minutes on two cores; bench/results/experiment_validation.json
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.common import CACHE, record, synthetic
from bench.serving_world import item_vectors
from ingestion.generic import GenericSource
from ingestion.importer import Importer
from ingestion.synthetic import SyntheticConfig
from monitoring import attribution
from monitoring.experiment_report import report
from monitoring.experiments import METRICS, ExperimentResult, analyze
from monitoring.simulate import ClickModel, TasteAffinity, redraw, simulate_day
from recsys.backends import open_catalog, open_interactions, open_lake, open_user_vectors
from recsys.models.item_index import ItemIndex
from recsys.settings import ExperimentVariant, Settings

CONFIG = SyntheticConfig(users=4_000, items=1_000, interactions=120_000, days=30, categories=20, seed=11)
VERSION = "experiment-validation"
N = 50
DAYS = 4
AA_RUNS = 200
LIFT_RUNS = 50
SHUFFLED = ExperimentVariant(name="shuffled", buckets=(50, 100), experiment="ranking", shuffle=True)
AA = ExperimentVariant(name="B", buckets=(0, 50), experiment="aa")
NEVER = ClickModel(scale=0.0, floor=0.0)  # answers only: the re-drawn runs need no events


def _step(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)


def build_world() -> tuple[Settings, TasteAffinity, list[str], datetime]:
    """A fresh `local` world (stores, item index, user vectors); the ground truth; its users; the day after."""
    raw = synthetic(CONFIG)
    folder = CACHE / "experiment-validation"
    shutil.rmtree(folder, ignore_errors=True)
    base = Settings.load().model_copy(update={"data_dir": folder, "profile": "local"})
    serving = base.serving.model_validate({**base.serving.model_dump(), "allow_as_of": True,
                                           "rate_limit_per_second": 100_000.0, "rate_limit_burst": 100_000})
    settings = base.model_copy(update={"serving": serving})
    source = GenericSource(raw)
    with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
        catalog.migrate()
        interactions.migrate()
        Importer(catalog, interactions, open_lake(settings)).run(source)
    items = source.items()
    assert items is not None
    ids = [str(i) for i in items["item_id"]]
    vectors = item_vectors(items["category"])
    events = open_lake(settings).interactions(columns=["user_id", "item_id", "event_time"]).to_pandas()
    end = events["event_time"].max().to_pydatetime()
    ItemIndex.build(vectors, ids, model_version=VERSION, data_start=end - timedelta(days=CONFIG.days), data_end=end,
                    version=VERSION).save(folder / "models" / VERSION / "item_index")
    (folder / "models" / "CURRENT").write_text(VERSION)
    row = events["item_id"].astype(str).map(dict(zip(ids, range(len(ids)))))
    users, matrix = [], []
    for user, rows in row.groupby(events["user_id"].astype(str)):
        mean = vectors[rows.to_numpy(dtype=np.int64)].mean(axis=0)
        users.append(str(user))
        matrix.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    with open_user_vectors(settings) as store:
        store.put(users, np.asarray(matrix, dtype=np.float32), VERSION, datetime.now(UTC))
    day_after = pd.Timestamp(end).normalize().to_pydatetime() + timedelta(days=1)
    return settings, TasteAffinity.from_ground_truth(raw), users, day_after


def with_experiments(settings: Settings, *variants: ExperimentVariant) -> Settings:
    return settings.model_copy(update={"serving": settings.serving.model_copy(update={"experiments": list(variants)})})


def serve(settings: Settings, users: list[str], start: datetime, affinity: TasteAffinity,
          clicks: ClickModel | None = None, days: int = 1) -> attribution.Served:
    """The users' visits through the API over `days` simulated days from `start`; what the lake then holds."""
    from bento_services.api.http import app_from_settings

    for day, chunk in enumerate(np.array_split(np.array(users), days)):
        result = simulate_day(settings, app_from_settings(settings), list(chunk), n=N, seed=day, affinity=affinity,
                              clicks=clicks, views=False, start=start + timedelta(days=day), show_progress=True)
        assert result.failed == 0 and result.logged == len(result.answers), result
    return attribution.load(settings, since=start, until=start + timedelta(days=days))


def summary(result: ExperimentResult) -> dict[str, Any]:
    arms = {arm: {"users": row["users"], "impressions": row["impressions"],
                  **{m: {k: row[m][k] for k in ("value", "low", "high")} for m in METRICS}}
            for arm, row in result.arms.items()}
    compared = {variant: {m: {k: d[k] for k in ("diff", "low", "high", "relative", "p_value", "significant")}
                          for m, d in metrics.items()} for variant, metrics in result.comparisons.items()}
    check = result.ratio_check
    guards = {arm: {"p99_latency_ms": g.p99_latency_ms, "degraded_share": g.degradation_share}
              for arm, g in result.guardrails.items()}
    ratio_check = {"observed": check.observed, "chi2": check.chi2, "p_value": check.p_value,
                   "mismatch": check.mismatch}
    return {"arms": arms, "comparisons": compared, "guardrails": guards, "ratio_check": ratio_check}


def naive_ctr_p(result: ExperimentResult, variant: str) -> float:
    """The impression-level two-proportion z-test of CTR (unpooled), as if impressions were independent."""
    a, b = result.arms["control"]["ctr"], result.arms[variant]["ctr"]
    pa, pb = a["numerator"] / a["denominator"], b["numerator"] / b["denominator"]
    se = math.sqrt(pa * (1 - pa) / a["denominator"] + pb * (1 - pb) / b["denominator"])
    return float(2 * stats.norm.sf(abs(pb - pa) / se))


def main() -> None:
    started = time.perf_counter()
    settings, affinity, users, day = build_world()
    _step(f"world: {len(users):,} users, {CONFIG.items:,} items, {CONFIG.categories} categories", started)
    rng = np.random.default_rng(0)

    lift_settings = with_experiments(settings, SHUFFLED)
    lifted = serve(lift_settings, users, day, affinity, days=DAYS)
    lift = analyze(lifted, lift_settings, "ranking")
    folder, verdict = report(lift_settings, "ranking", day, day + timedelta(days=DAYS), served=lifted)
    _step(f"lift: {verdict.line}", started)
    power: dict[str, list[tuple[float, float]]] = {m: [] for m in METRICS}
    for _ in range(LIFT_RUNS):
        again = analyze(redraw(lifted.log, affinity, rng), lift_settings, "ranking").comparisons["shuffled"]
        for m in METRICS:
            power[m].append((again[m]["p_value"], again[m]["relative"]))
    _step("lift: power over redraws", started)

    aa_day = day + timedelta(days=DAYS + 1)
    once = serve(with_experiments(settings), users, aa_day, affinity, clicks=NEVER)
    aa_settings = with_experiments(settings, AA)
    p_values: dict[str, list[float]] = {m: [] for m in (*METRICS, "ctr_impression_level", "ratio_check")}
    for _ in range(AA_RUNS):
        run = analyze(redraw(once.log, affinity, rng, {"control": 0.5, "B": 0.5}), aa_settings, "aa")
        for m in METRICS:
            p_values[m].append(run.comparisons["B"][m]["p_value"])
        p_values["ctr_impression_level"].append(naive_ctr_p(run, "B"))
        p_values["ratio_check"].append(run.ratio_check.p_value)
    _step("A/A runs", started)

    planted_day = day + timedelta(days=DAYS + 3)
    planted = serve(with_experiments(settings, SHUFFLED.model_copy(update={"buckets": (45, 100)})), users,
                    planted_day, affinity, clicks=NEVER)
    srm = analyze(planted, lift_settings, "ranking")
    _step(f"planted split: ratio check p={srm.ratio_check.p_value:.3g}", started)

    alpha = settings.monitoring.experiment_alpha
    record("experiment_validation", {
        "world": {"users": len(users), "items": CONFIG.items, "categories": CONFIG.categories, "list_length": N,
                  "ranking": "candidate scores over category-clustered vectors (no ranker trained here)",
                  "click_model": asdict(ClickModel()), "test": "delta method over users, Wald z, alpha "
                  f"{alpha}"},
        "lift": {"served": summary(lift), "report": str(folder / verdict.files[0]), "verdict": verdict.line,
                 "redraws": LIFT_RUNS,
                 "power": {m: float(np.mean([p < alpha for p, _ in runs])) for m, runs in power.items()},
                 "mean_relative_lift": {m: float(np.mean([r for _, r in runs])) for m, runs in power.items()}},
        "aa": {"runs": AA_RUNS, "users": len(users), "answers": len(once.log),
               "false_positive_rate": {m: float(np.mean(np.array(p) < alpha)) for m, p in p_values.items()
                                       if m != "ratio_check"},
               "false_positive_95ci_if_calibrated": [x / AA_RUNS for x in stats.binom.interval(0.95, AA_RUNS, alpha)],
               "ratio_check_false_alarms": int(np.sum(np.array(p_values["ratio_check"]) <
                                                      settings.monitoring.experiment_srm_alpha)),
               "p_value_deciles_ctr": np.quantile(p_values["ctr"], np.linspace(0.1, 0.9, 9)).round(3).tolist()},
        "planted_split": {"served_shares": {"shuffled": 0.55, "control": 0.45}, "told": {"shuffled": 0.5,
                                                                                          "control": 0.5},
                          "observed_users": srm.ratio_check.observed, "chi2": srm.ratio_check.chi2,
                          "p_value": srm.ratio_check.p_value, "mismatch": srm.ratio_check.mismatch},
        "seconds": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
