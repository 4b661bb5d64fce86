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


# -- the Kafka bus's circuit breaker: refuse at once while Kafka is known to be down, probe in the background --


def refused_within(bus: KafkaBus, seconds: float, kind: str = "interaction") -> EventBusUnavailableError:
    """Publish once; it must be refused (503 with Retry-After) in under `seconds`."""
    started = time.monotonic()
    with pytest.raises(EventBusUnavailableError) as raised:
        bus.publish(kind, "u1", event())
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"refused after {elapsed:.3f} s"
    assert raised.value.http_status == 503 and raised.value.retry_after_seconds > 0
    assert "retry later with the same event_id" in raised.value.message
    return raised.value


def test_kafka_breaker_opens_after_a_failed_publish_and_refuses_at_once() -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    bus = KafkaBus(kafka, retries=2, timeout_ms=300, outcome=count_published, probe_interval_s=0.2)
    before = failed_count("interaction")
    try:
        started = time.monotonic()
        with pytest.raises(EventBusUnavailableError, match="after 2 attempts"):
            bus.publish("interaction", "u1", event())
        assert 0.3 < time.monotonic() - started < 10.0  # its bounded attempts were made
        for _ in range(20):  # while open: refused without touching Kafka, well under 100 ms each
            refused = refused_within(bus, 0.1)
            assert "circuit breaker open" in refused.message
        assert failed_count("interaction") == before + 21  # a refusal is a failed publish too
        assert not bus.ready()
        time.sleep(0.6)  # a few probes of the closed port later: still refused at once
        refused_within(bus, 0.1)
    finally:
        bus.close()
    assert not any(t.name.startswith("breaker-probe") and t.is_alive() for t in threading.enumerate())


def kafka_sh(command: str) -> None:
    import subprocess

    from recsys.settings import ROOT_DIR

    subprocess.run(["bash", str(ROOT_DIR / "infra" / "kafka.sh"), command], check=True, timeout=180)


@pytest.mark.services
def test_kafka_breaker_opens_and_closes_across_a_broker_restart(kafka_up: None) -> None:
    """Restarts the project's Kafka broker: refused at once while it is down, accepted again once it is back."""
    settings = with_topic(Settings.load().model_copy(update={"profile": "services"}),
                          f"test-breaker-{uuid.uuid4().hex[:8]}")
    bus = KafkaBus(settings.kafka, retries=3, timeout_ms=1000, probe_interval_s=0.5)
    before, after = event(), event()
    try:
        bus.publish("interaction", "u1", before)
        kafka_sh("stop")
        assert not bus.ready()
        started = time.monotonic()
        with pytest.raises(EventBusUnavailableError, match="after 3 attempts"):
            bus.publish("interaction", "u1", event())
        assert time.monotonic() - started < 10.0  # three 1 s attempts
        for _ in range(10):
            refused_within(bus, 0.1)
        assert not bus.ready()
        kafka_sh("start")
        deadline, accepted = time.monotonic() + 60, False
        while not accepted:  # the same bus, no new one: the prober closes the breaker
            assert time.monotonic() < deadline, "publishes still refused 60 s after the broker came back"
            try:
                bus.publish("interaction", "u1", after)
                accepted = True
            except EventBusUnavailableError:
                time.sleep(0.2)
        assert bus.ready()
        bus.publish("interaction", "u2", second := event("u2"))
    finally:
        kafka_sh("start")  # already running: returns at once
        bus.close()
    ids = {value["event_id"] for _, value in read_topic(settings, expected=3)}
    assert {before["event_id"], after["event_id"], second["event_id"]} <= ids


@pytest.mark.services
def test_http_interactions_across_a_kafka_broker_restart_are_202_or_503_and_every_202_is_consumed(
        kafka_up: None, tmp_path: Path) -> None:
    """Restarts the project's Kafka broker while a thread posts interactions through the HTTP API."""
    from bento_services.api.http import create_app
    from tests.bento_services.conftest import FakeService, api_settings, client, served
    from tests.conftest import make_settings

    settings = api_settings(with_topic(make_settings("services", tmp_path), f"test-restart-{uuid.uuid4().hex[:8]}"),
                            publish_retries=3, publish_timeout_ms=2000.0,
                            rate_limit_per_second=10_000.0, rate_limit_burst=10_000)
    answers: list[tuple[int, str | None, str | None, float]] = []  # status, event_id, Retry-After, seconds
    stop = threading.Event()

    def post_in_a_loop(url: str) -> None:
        with client(url) as http:
            while not stop.is_set():
                event_id = str(uuid.uuid4())
                started = time.monotonic()
                answer = http.post("/interactions", json={"user_id": "u1", "item_id": f"i{len(answers)}",
                                                          "action_type": "click", "event_id": event_id})
                answers.append((answer.status_code, answer.json().get("event_id") if answer.status_code == 202
                                else event_id, answer.headers.get("Retry-After"), time.monotonic() - started))
                time.sleep(0.02)

    def wait_for(condition: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"no {what} within {seconds} s: {answers[-5:]}"
            time.sleep(0.05)

    bus = open_bus(settings)
    with served(create_app(settings, FakeService(), bus, close_on_shutdown=True)) as url:
        poster = threading.Thread(target=post_in_a_loop, args=(url,), daemon=True)
        poster.start()
        try:
            wait_for(lambda: sum(a[0] == 202 for a in answers) >= 20, 30, "202s before the restart")
            kafka_sh("stop")
            down_from = len(answers)
            wait_for(lambda: sum(a[0] == 503 for a in answers[down_from:]) >= 20, 60, "503s while Kafka is down")
            kafka_sh("start")
            up_from = len(answers)
            wait_for(lambda: sum(a[0] == 202 for a in answers[up_from:]) >= 20, 60, "202s after the restart")
        finally:
            stop.set()
            poster.join(timeout=30)
            kafka_sh("start")
    assert not poster.is_alive()
    assert {status for status, *_ in answers} <= {202, 503}, sorted({status for status, *_ in answers})
    refused = [a for a in answers if a[0] == 503]
    assert all(retry_after is not None and int(retry_after) > 0 for _, _, retry_after, _ in refused)
    # Only the publish that found Kafka down waited its attempts; the rest were refused at once.
    assert sum(seconds > 1.0 for *_, seconds in refused) <= 3 and len(refused) >= 20
    accepted = {event_id for status, event_id, *_ in answers if status == 202}
    consumed = {value["event_id"] for _, value in read_topic(settings, expected=len(accepted), timeout_s=60)}
    assert accepted <= consumed, f"{len(accepted - consumed)} accepted events never reached the topic"
