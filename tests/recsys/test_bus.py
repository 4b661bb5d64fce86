"""The event buses: bounded retries then EventBusUnavailableError, Kafka keyed by user, the local store writer."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bento_services.metrics import EVENTS_PUBLISHED, count_published
from recsys.backends import open_bus, open_interactions
from recsys.bus.in_process import InProcessBus
from recsys.bus.kafka import KafkaBus
from recsys.errors import EventBusUnavailableError
from recsys.settings import KafkaSettings, Settings
from tests.bento_services.conftest import closed_port, read_topic, with_topic


def event(user: str = "u1", item: str = "i1", **extra: Any) -> dict[str, Any]:
    return {"kind": "interaction", "event_id": str(uuid.uuid4()), "user_id": user, "item_id": item,
            "event_time": "2024-05-01T10:00:00.000Z", "action_type": "click", "value": None, "session_id": "s1",
            "context": {"device": "ios"}, **extra}


def failed_count(kind: str) -> float:
    return EVENTS_PUBLISHED.labels(kind, "failed")._value.get()


def test_in_process_bus_runs_handlers_before_answering() -> None:
    bus = InProcessBus()
    seen: list[dict[str, Any]] = []
    bus.subscribe("interaction", seen.append)
    bus.publish("interaction", "u1", payload := event())
    assert seen == [payload]
    bus.publish("feedback", "u1", {"kind": "feedback"})  # no subscriber: accepted, nothing runs
    bus.close()
    assert not bus.ready()


def test_in_process_consumer_failure_is_retried_then_refused() -> None:
    bus = InProcessBus(retries=3, timeout_ms=500, outcome=count_published)
    calls: list[int] = []

    def broken(payload: dict[str, Any]) -> None:
        calls.append(1)
        raise OSError("disk full")

    bus.subscribe("interaction", broken)
    before = failed_count("interaction")
    with pytest.raises(EventBusUnavailableError, match="after 3 attempts.*disk full") as raised:
        bus.publish("interaction", "u1", event())
    assert len(calls) == 3 and raised.value.http_status == 503 and raised.value.retry_after_seconds > 0
    assert failed_count("interaction") == before + 1
    bus.close()


def test_in_process_consumer_recovering_within_the_retries_is_accepted() -> None:
    bus = InProcessBus(retries=3)
    calls: list[int] = []

    def flaky(payload: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("database is locked")

    bus.subscribe("interaction", flaky)
    bus.publish("interaction", "u1", event())
    assert len(calls) == 2
    bus.close()


def test_in_process_slow_consumer_times_out_in_bounded_time() -> None:
    bus = InProcessBus(retries=2, timeout_ms=100)
    release = threading.Event()
    bus.subscribe("interaction", lambda payload: release.wait(60))  # stuck until the test lets it go
    started = time.monotonic()
    with pytest.raises(EventBusUnavailableError, match="took over"):
        bus.publish("interaction", "u1", event())
    assert time.monotonic() - started < 10.0  # two 100 ms attempts, not the consumer's minute
    release.set()
    bus.close()


def test_local_bus_writes_interactions_and_ratings_to_the_store_once(tmp_path: Path) -> None:
    settings = Settings.load().model_copy(update={"data_dir": tmp_path / "data", "profile": "local"})
    bus = open_bus(settings)
    click = event()
    bus.publish("interaction", "u1", click)
    bus.publish("interaction", "u1", click)  # at-least-once delivery: the same event_id is written once
    bus.publish("feedback", "u1", {"kind": "feedback", "event_id": "f1", "user_id": "u1", "item_id": "i2",
                                   "event_time": "2024-05-01T11:00:00.000Z", "feedback": "rating", "value": 4.5,
                                   "reason": None})
    bus.publish("feedback", "u1", {"kind": "feedback", "event_id": "f2", "user_id": "u1", "item_id": "i3",
                                   "event_time": "2024-05-01T12:00:00.000Z", "feedback": "not_interested",
                                   "value": None, "reason": None})
    bus.close()
    with open_interactions(settings) as store:
        rows = store.user_events("u1")
    assert list(rows["event_id"]) == ["f1", click["event_id"]]
    assert list(rows["action_type"]) == ["rate", "click"]
    assert rows["value"].iloc[0] == 4.5
    assert rows["session_id"].iloc[1] == "s1" and rows["context"].iloc[1] == '{"device":"ios"}'


def test_kafka_bus_starts_without_kafka_and_refuses_in_bounded_time() -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    bus = KafkaBus(kafka, retries=2, timeout_ms=300)  # no connection yet: Kafka may be down at start
    assert not bus.ready()
    started = time.monotonic()
    with pytest.raises(EventBusUnavailableError, match=f"Kafka at {kafka.bootstrap_servers} after 2 attempts"):
        bus.publish("interaction", "u1", event())
    assert time.monotonic() - started < 10.0  # two 300 ms attempts, not kafka-python's 60 s max_block
    bus.close()


@pytest.mark.services
def test_kafka_bus_publishes_keyed_by_user(kafka_up: None, tmp_path: Path) -> None:
    settings = with_topic(Settings.load().model_copy(update={"profile": "services"}),
                          f"test-interactions-{uuid.uuid4().hex[:8]}")
    bus = open_bus(settings)
    assert isinstance(bus, KafkaBus) and bus.ready()
    first, second = event("u1"), event("u2", "i9")
    try:
        bus.publish("interaction", "u1", first)
        bus.publish("interaction", "u2", second)
    finally:
        bus.close()
    assert sorted(read_topic(settings, expected=2), key=lambda m: m[0]) == [(b"u1", first), (b"u2", second)]
