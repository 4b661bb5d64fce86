"""The gate: what a new version must pass before `models/CURRENT` names it.

1. Its offline metrics on the held-out day (`workflow.evaluate`) are not worse than the serving version's by
   more than `pipeline.metric_tolerance` (a share of the serving value), metric by metric (`GATED`).
2. Its final lists' NDCG@10 beats popularity's by more than `pipeline.popularity_margin`.
3. Its item index loads as serving loads it and answers a query (candidates for a user with history).
4. A latency probe of the full request path (the serving pipeline built in process on the new folder and
   ranker, no precomputed lists) keeps p99 within `pipeline.latency_budget_ms`, without errors.

Every failed check is one reason, naming the metric or check and the numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bento_services.pipeline.contracts import Degradation, RecommendationRequest
from bento_services.pipeline.pipeline import build_pipeline
from bento_services.pipeline.retrieve import Retriever, load_serving_tables
from recsys.settings import PipelineSettings, Settings
from workflow.evaluate import FINAL_K


def gated_metrics(k: int) -> list[str]:
    """The metrics compared with the serving version's."""
    return [f"ann_recall@{k}", f"candidate_recall@{k}", f"candidate_ndcg@{FINAL_K}", f"ndcg@{FINAL_K}"]


@dataclass
class Verdict:
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.reasons


def judge_metrics(new: dict[str, float], serving: dict[str, float] | None, popular: dict[str, float],
                  config: PipelineSettings) -> list[str]:
    """Reasons against the new version's metrics (empty: they pass); `serving` None: no version in service."""
    reasons = []
    for metric in gated_metrics(config.k):
        if serving is None or metric not in new or metric not in serving or np.isnan(serving[metric]):
            continue
        floor = serving[metric] * (1 - config.metric_tolerance)
        if not new[metric] >= floor:
            reasons.append(f"{metric} {new[metric]:.4f} is below the serving version's {serving[metric]:.4f} by "
                           f"more than the tolerance of {config.metric_tolerance:.0%} (floor {floor:.4f})")
    metric = f"ndcg@{FINAL_K}"
    bar = popular[metric] * (1 + config.popularity_margin)
    if not new[metric] > bar:
        reasons.append(f"{metric} {new[metric]:.4f} does not beat popularity's {popular[metric]:.4f}"
                       + (f" by the margin of {config.popularity_margin:.0%}" if config.popularity_margin else ""))
    return reasons


def index_answers(settings: Settings, folder: Path, user_history: Sequence[str]) -> str | None:
    """None when the folder's index loads as serving loads it and answers a user with this history; else why."""
    tables = load_serving_tables(settings, folder)
    if tables.tables is None:
        return f"index: {tables.error}"
    retriever = Retriever(tables.tables, settings.serving.nprobe)
    vector = retriever.fold_in(list(user_history))
    if vector is None:
        return "index: none of a held-out user's items has a vector in the new index"
    found = retriever.retrieve(vector, list(user_history), set(user_history), [])
    if not found:
        return "index: no candidates for a held-out user with history"
    return None


WARM_REQUESTS = 10  # answers the latency probe does not time, of other users than those it times (when it can)


def latency_probe(settings: Settings, folder: Path, ranker: Any | None, users: Sequence[str],
                  requests: int) -> dict[str, float]:
    """Time `requests` answers of the full path (precomputed lists off) on the new version, cycling `users`, after
    WARM_REQUESTS untimed ones (at 10M interactions the first answers of a new process took up to 0.8 s, and two
    of them were p99 of 200): p50, p99, max in ms, errors, and the share of answers below the `full` rung."""
    serving = settings.serving.model_copy(update={"precomputed_reads": False})
    pipeline = build_pipeline(settings.model_copy(update={"serving": serving}), candidates_dir=folder, ranker=ranker)
    times, errors, degraded = [], 0, 0
    try:
        for user in users[-WARM_REQUESTS:]:  # first reads of each store, torch's first calls: a process warming up
            pipeline.recommend(RecommendationRequest(user, n=50), use_precomputed=False)
        for turn in range(requests):
            started = time.perf_counter()
            try:
                answer = pipeline.recommend(RecommendationRequest(users[turn % len(users)], n=50),
                                            use_precomputed=False)
                degraded += answer.degradation is not Degradation.FULL
            except Exception:  # noqa: BLE001 - counted: an error fails the probe
                errors += 1
            times.append((time.perf_counter() - started) * 1000)
    finally:
        pipeline.close()
    spread = np.asarray(times)
    return {"p50_ms": float(np.percentile(spread, 50)), "p99_ms": float(np.percentile(spread, 99)),
            "max_ms": float(spread.max()), "requests": float(requests), "errors": float(errors),
            "degraded_share": degraded / requests}


def judge_latency(probe: dict[str, float], config: PipelineSettings) -> list[str]:
    reasons = []
    if probe["errors"]:
        reasons.append(f"latency probe: {int(probe['errors'])} of {int(probe['requests'])} requests failed")
    if probe["p99_ms"] > config.latency_budget_ms:
        reasons.append(f"latency probe: p99 {probe['p99_ms']:.1f} ms is over the budget of "
                       f"{config.latency_budget_ms:.0f} ms")
    return reasons
