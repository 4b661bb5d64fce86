"""Prometheus metrics of the recommendation API, in a registry of our own (served at `/metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
EVENTS_PUBLISHED = Counter("recsys_events_published", "Events published to the bus by kind and result",
                           ["kind", "result"], registry=REGISTRY)

SERVING_LOG = Counter("recsys_serving_log_records", "Serving-log records by result: written (to Kafka or the lake), "
                      "dropped (the buffer was full: the sink is down or slow), failed (a write that raised)",
                      ["result"], registry=REGISTRY)


def count_published(kind: str, result: str) -> None:
    """The bus's `Outcome` callback: one count per publish, by kind and result (`ok` or `failed`)."""
    EVENTS_PUBLISHED.labels(kind, result).inc()
