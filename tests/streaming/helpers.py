"""Consumers on the real Kafka for tests: each test gets its own topic, groups and stores."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from recsys.backends import open_consumer
from recsys.settings import Settings
from recsys.streaming.consumers import Consumer
from recsys.streaming.kafka_runner import KafkaRunner
from recsys.streaming.topics import ensure_topics, group_lag


def own_streams(settings: Settings, name: str) -> Settings:
    """`settings` with a topic, DLQ, serving-log topic and consumer groups of the test's own."""
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topic": f"test-{tag}"}),
        "streaming": settings.streaming.model_copy(update={
            "dlq_topic": f"test-{tag}.dlq", "group_prefix": f"test-{tag}-", "partitions": 4,
            "batch_linger_ms": 20, "backoff_max_seconds": 1.0}),
        "monitoring": settings.monitoring.model_copy(update={"serving_log_topic": f"test-{tag}.served"}),
    })


class Member:
    """One consumer group member on a thread."""

    def __init__(self, settings: Settings, consumer: Consumer) -> None:
        self.runner = KafkaRunner(consumer, settings, threading.Event())
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"member-{consumer.name}")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> None:
        self.runner.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the consumer did not stop within 30 s"
        assert self.error is None, f"the consumer failed: {self.error!r}"


@contextmanager
def members(settings: Settings, names: Sequence[str]) -> Iterator[list[Member]]:
    started = [Member(settings, open_consumer(settings, name)) for name in names]
    try:
        yield started
    finally:
        for member in started:
            member.stop()


def events(users: int, per_user: int, start: datetime | None = None, action: str = "view") -> list[dict[str, Any]]:
    moment = start or datetime.now(UTC) - timedelta(minutes=10)
    run = uuid.uuid4().hex[:6]  # users of this call only: the stores outlive a test
    out = []
    for k in range(users * per_user):
        out.append({"kind": "interaction", "schema_version": 1, "event_id": str(uuid.uuid4()),
                    "user_id": f"su{run}-{k % users}", "item_id": f"si{k % 97}",
                    "event_time": (moment + timedelta(milliseconds=k)).isoformat().replace("+00:00", "Z"),
                    "action_type": action, "value": None, "session_id": None, "context": {}})
    return out


def produce(settings: Settings, messages: Sequence[dict[str, Any] | bytes], key: Callable[[Any], bytes] | None = None
            ) -> None:
    """Send raw messages (dicts as JSON) keyed by user, acks=all, and wait until all are acknowledged."""
    from kafka import KafkaProducer

    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers.split(","), acks="all",
                             linger_ms=5, batch_size=256 * 1024)
    try:
        for message in messages:
            value = message if isinstance(message, bytes) else json.dumps(message).encode()
            user = message.get("user_id", "x") if isinstance(message, dict) else "x"
            producer.send(settings.kafka.topic, key=key(message) if key else str(user).encode(), value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def caught_up(settings: Settings, names: Sequence[str]) -> bool:
    lag = group_lag(settings, list(names))
    return all(sum(partitions.values()) == 0 for partitions in lag.values())
