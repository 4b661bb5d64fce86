"""Prometheus metrics of the consumers, in a registry of their own: a consumer process serves it on its
metrics port (`recsys consume`); in `local` the API's `/metrics` includes it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter("recsys_consumer_events", "Events by consumer and result (applied, invalid, failed)",
                 ["consumer", "result"], registry=REGISTRY)
DEAD_LETTERS = Counter("recsys_consumer_dead_letters", "Events sent to the dead-letter topic by reason",
                       ["consumer", "reason"], registry=REGISTRY)
BATCH_SECONDS = Histogram("recsys_consumer_batch_seconds", "Time to apply one batch, by consumer", ["consumer"],
                          buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=REGISTRY)
LAG = Gauge("recsys_consumer_lag", "Events behind the end of each partition, by consumer",
            ["consumer", "partition"], registry=REGISTRY)
NEWEST_AGE = Gauge("recsys_consumer_newest_event_age_seconds",
                   "Age of the newest event applied (now minus its event_time), by consumer", ["consumer"],
                   registry=REGISTRY)


def reason_label(reason: str) -> str:
    """A bounded label from a free-text reason: its first words (`unknown action_type`, `not JSON`)."""
    words = reason.replace(":", " ").split()
    return " ".join(words[:2]) if words else "unknown"
