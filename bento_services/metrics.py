"""Prometheus metrics of the recommendation API, in a registry of our own (served at `/metrics`).

Under BentoML every API worker is a process of its own and prometheus_client keeps each worker's counters and
histograms in files under `PROMETHEUS_MULTIPROC_DIR` (BentoML sets it): `exposition()` sums them over every
worker, so `/metrics` is whole whichever worker answers the scrape. Collectors computed at scrape time
(`register_scrape_time`: the drift verdict, the collector pauses of the answering worker) are added to it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from recsys.settings import Settings

REGISTRY = CollectorRegistry(auto_describe=True)

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

STAGE_SECONDS = Histogram(
    "recsys_stage_seconds", "Time spent in each pipeline stage", ["stage"], buckets=_BUCKETS, registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "recsys_request_seconds", "End-to-end handler time per endpoint", ["endpoint"], buckets=_BUCKETS,
    registry=REGISTRY,
)
REQUESTS = Counter("recsys_requests", "Requests by endpoint and status code", ["endpoint", "status"],
                   registry=REGISTRY)
CACHE_LOOKUPS = Counter(
    "recsys_cache_lookups", "Cache lookups by layer (precomputed, embedding, feature) and result (hit, miss)",
    ["layer", "result"], registry=REGISTRY,
)
DEGRADATIONS = Counter("recsys_degradations", "Answers by degradation level", ["level"], registry=REGISTRY)
STAGE_FAILURES = Counter("recsys_stage_failures", "Stage failures by stage and reason (error, timeout)",
                         ["stage", "reason"], registry=REGISTRY)
ADMISSIONS = Counter("recsys_admissions", "Requests by kind (recommendations; events: POST /interactions and "
                     "/feedback) and admission-control outcome: admitted (at once or after a wait), queue_full or "
                     "queue_timeout (both refused with 503 and Retry-After)", ["kind", "result"], registry=REGISTRY)
ADMISSION_WAIT_SECONDS = Histogram("recsys_admission_wait_seconds", "Time each admitted request waited for a slot "
                                   "(0 when one was free), by kind", ["kind"], buckets=_BUCKETS, registry=REGISTRY)
BUSY_ANSWERS = Counter("recsys_busy_answers", "GET /recommendations answered from a cheap rung (precomputed, popular) "
                       "instead of the full path because the server was busy, by why: deadline (the request had "
                       "waited its share of serving.request_budget_ms), layer1_busy (the precomputed read timed out "
                       "or found its threads busy)", ["reason"], registry=REGISTRY)
EVENTS_PUBLISHED = Counter("recsys_events_published", "Events published to the bus by kind and result",
                           ["kind", "result"], registry=REGISTRY)

SERVING_LOG = Counter("recsys_serving_log_records", "Serving-log records by result: written (to Kafka or the lake), "
                      "dropped (the buffer was full: the sink is down or slow), failed (a write that raised)",
                      ["result"], registry=REGISTRY)


_SCRAPE_TIME: list[Collector] = []


def register_scrape_time(collector: Collector) -> None:
    """A collector that computes its values when scraped (not a multiprocess metric): served by `exposition`."""
    if collector not in _SCRAPE_TIME:
        _SCRAPE_TIME.append(collector)
        REGISTRY.register(collector)


def exposition() -> bytes:
    """The text `/metrics` serves: every worker's metrics summed when running under BentoML's workers
    (`PROMETHEUS_MULTIPROC_DIR` set), this process's registry otherwise."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # The values are in files only when the variable was set before prometheus_client was imported (BentoML's
    # workers); Feast sets it on import too, for its own metrics, which leaves ours in memory.
    if values.ValueClass is values.MutexValue or not folder or not os.path.isdir(folder):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, folder)
    for collector in _SCRAPE_TIME:
        registry.register(collector)
    return generate_latest(registry)


def count_published(kind: str, result: str) -> None:
    """The bus's `Outcome` callback: one count per publish, by kind and result (`ok` or `failed`)."""
    EVENTS_PUBLISHED.labels(kind, result).inc()


# -- the newest drift report (`recsys monitor drift`), read at scrape time ---------------------------------------
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DRIFT_VERDICT = Path("verdicts") / "drift.json"  # in each dated report folder (monitoring.reports)


class DriftCollector(Collector):
    """`recsys_drift_share{report="features"}` (the share of the ranker's features that drifted),
    `recsys_drift_ok{report}` (1 within thresholds, 0 crossed; `all` and each part compared) and
    `recsys_drift_report_timestamp_seconds`, from the newest dated folder's drift verdict. The API never runs
    the report: it reads the file the command wrote, again only when its path or mtime changed."""

    def __init__(self, reports_path: Path) -> None:
        self.reports_path = reports_path
        self._seen: tuple[Path, float] | None = None
        self._verdict: dict[str, Any] | None = None

    def newest(self) -> Path | None:
        if not self.reports_path.is_dir():
            return None
        days = sorted((p for p in self.reports_path.iterdir() if _DAY.match(p.name)), reverse=True)
        return next((day / DRIFT_VERDICT for day in days if (day / DRIFT_VERDICT).is_file()), None)

    def verdict(self) -> dict[str, Any] | None:
        path = self.newest()
        if path is None:
            return None
        try:
            key = (path, path.stat().st_mtime)
            if key != self._seen:
                self._verdict, self._seen = json.loads(path.read_text()), key
        except (OSError, ValueError):  # being replaced right now: keep the last one read
            pass
        return self._verdict

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families(self.verdict()))

    @staticmethod
    def _families(verdict: dict[str, Any] | None = None) -> list[GaugeMetricFamily]:
        share = GaugeMetricFamily("recsys_drift_share", "Share of the ranker's features that drifted from the "
                                  "training set, newest drift report", labels=["report"])
        ok = GaugeMetricFamily("recsys_drift_ok", "Newest drift report within its thresholds (1) or not (0), "
                               "overall (all) and per part", labels=["report"])
        created = GaugeMetricFamily("recsys_drift_report_timestamp_seconds", "When the newest drift report ran")
        if verdict is not None:
            metrics = verdict.get("metrics", {})
            if "drift_share" in metrics:
                share.add_metric(["features"], float(metrics["drift_share"]))
            ok.add_metric(["all"], float(bool(verdict.get("ok"))))
            for name, value in metrics.items():
                if name.endswith("_ok"):
                    ok.add_metric([name.removesuffix("_ok")], float(value))
            if verdict.get("created_at"):
                created.add_metric([], datetime.fromisoformat(verdict["created_at"]).timestamp())
        return [share, ok, created]


_drift: DriftCollector | None = None


def register_drift_gauge(settings: Settings) -> DriftCollector:
    """Serve the newest drift verdict under `settings.reports_path` on `/metrics`; calling again repoints it."""
    global _drift
    if _drift is None:
        _drift = DriftCollector(settings.reports_path)
        register_scrape_time(_drift)
    else:
        _drift.reports_path = settings.reports_path
    return _drift
