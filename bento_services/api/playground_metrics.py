"""The playground's live metrics: what `/metrics` exports about `GET /recommendations`, summed up in JSON.

Requests and server errors, p50 and p99 of the handler time (read off the histogram's buckets the way
PromQL's `histogram_quantile` does: linear within the bucket), the hit rate of each cache layer, and the share
of answers that came from a degraded rung (any but `full` and `cold_start`, as the RecsysDegradedAnswers alert
counts them). Each figure comes twice: since the process started, and over the last `WINDOW_SECONDS` (the
difference to a snapshot kept from an earlier call; shorter while the process is younger than that).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from bento_services.metrics import REGISTRY

ENDPOINT = "/recommendations"
WINDOW_SECONDS = 60.0
NOT_DEGRADED = ("full", "cold_start")


@dataclass
class Counters:
    """The cumulative values read from the registry at `at` (monotonic seconds)."""

    at: float
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count (+Inf included)
    lookups: dict[tuple[str, str], float] = field(default_factory=dict)  # (layer, hit|miss) -> count
    levels: dict[str, float] = field(default_factory=dict)  # degradation level -> answers

    def minus(self, older: Counters) -> Counters:
        """What happened between `older` and this reading."""
        def less(new: dict[Any, float], old: dict[Any, float]) -> dict[Any, float]:
            return {key: value - old.get(key, 0.0) for key, value in new.items()}

        return Counters(self.at, self.requests - older.requests, self.errors - older.errors,
                        less(self.buckets, older.buckets), less(self.lookups, older.lookups),
                        less(self.levels, older.levels))


def read(registry: CollectorRegistry = REGISTRY) -> Counters:
    """The counters of `GET /recommendations` as the registry holds them now."""
    counters = Counters(time.monotonic())
    for family in registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "recsys_requests_total" and labels.get("endpoint") == ENDPOINT:
                counters.requests += sample.value
                counters.errors += sample.value if labels.get("status", "").startswith("5") else 0.0
            elif sample.name == "recsys_request_seconds_bucket" and labels.get("endpoint") == ENDPOINT:
                counters.buckets[float(labels["le"])] = sample.value
            elif sample.name == "recsys_cache_lookups_total":
                counters.lookups[labels["layer"], labels["result"]] = sample.value
            elif sample.name == "recsys_degradations_total":
                counters.levels[labels["level"]] = sample.value
    return counters


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a histogram's cumulative buckets (seconds), as `histogram_quantile`; None when empty."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, buckets[bounds[-1]] if bounds else 0.0)
    if total <= 0:
        return None
    rank, below, lower = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # past the last finite bucket: its bound is all that is known
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        below, lower = count, bound
    return lower


def stats(counters: Counters, seconds: float | None = None) -> dict[str, Any]:
    """The figures the panel shows; `seconds` (the window's length) adds the request rate."""
    answers = sum(counters.levels.values())
    degraded = sum(v for level, v in counters.levels.items() if level not in NOT_DEGRADED)
    layers = sorted({layer for layer, _ in counters.lookups})
    hit_rate: dict[str, float | None] = {}
    for layer in layers:
        hits, misses = counters.lookups.get((layer, "hit"), 0.0), counters.lookups.get((layer, "miss"), 0.0)
        hit_rate[layer] = hits / (hits + misses) if hits + misses > 0 else None
    p50, p99 = quantile(0.5, counters.buckets), quantile(0.99, counters.buckets)
    return {
        "requests": int(counters.requests), "errors": int(counters.errors),
        "per_second": counters.requests / seconds if seconds else None,
        "p50_ms": p50 * 1000 if p50 is not None else None, "p99_ms": p99 * 1000 if p99 is not None else None,
        "cache_hit_rate": hit_rate, "answers": int(answers),
        "degraded_share": degraded / answers if answers else None,
        "levels": {level: int(v) for level, v in sorted(counters.levels.items()) if v},
    }


class LiveMetrics:
    """Summaries since start and over the last WINDOW_SECONDS, from snapshots kept at most one a second."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, window_seconds: float = WINDOW_SECONDS) -> None:
        self.registry, self.window_seconds = registry, window_seconds
        self._snapshots: deque[Counters] = deque()
        self._lock = threading.Lock()

    def summary(self) -> dict[str, Any]:
        now = read(self.registry)
        with self._lock:
            while len(self._snapshots) > 1 and now.at - self._snapshots[1].at >= self.window_seconds:
                self._snapshots.popleft()  # keep one snapshot at least a window old, the base
            base = self._snapshots[0] if self._snapshots else None
            if not self._snapshots or now.at - self._snapshots[-1].at >= 1.0:
                self._snapshots.append(now)
        if base is None or now.at - base.at <= 0:
            recent, seconds = None, 0.0
        else:
            seconds = now.at - base.at
            recent = stats(now.minus(base), seconds)
        return {"endpoint": ENDPOINT, "total": stats(now), "recent": recent, "recent_seconds": round(seconds, 1)}
