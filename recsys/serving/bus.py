"""The event bus the API publishes interactions and feedback to: Kafka in `services`, in-process in `local`.

Both buses answer `publish` only once the event is durable (Kafka acknowledged it with ``acks=all``, or
the in-process consumers ran), retry a bounded number of times with a per-attempt timeout, and then
raise `EventBusUnavailableError` (HTTP 503 with Retry-After): an event is never silently dropped.
Delivery is at-least-once; consumers write idempotently by ``event_id``.

Every event goes to the one topic ``settings.kafka.topic`` (``interaction-events``), keyed by
``user_id``, as JSON with a ``kind`` field (``interaction`` or ``feedback``), as the design's data flow
draws it: one ordered stream per user, one set of consumers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

import pandas as pd
from kafka.errors import KafkaError

from recsys.errors import EventBusUnavailableError
from recsys.events import INTERACTION_COLUMNS, context_to_json
from recsys.serving.metrics import EVENTS_PUBLISHED
from recsys.settings import KafkaSettings, Settings
from recsys.stores import InteractionStore, open_interactions

Handler = Callable[[dict[str, Any]], None]
RETRY_AFTER_SECONDS = 5


class EventBus(Protocol):
    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Publish one event of `kind` keyed by `key`; raises EventBusUnavailableError after bounded retries."""
        ...

    def ready(self) -> bool:
        """Whether an event published now would likely be accepted."""
        ...

    def close(self) -> None: ...


def publish_with_retries(kind: str, attempt: Callable[[], None], retries: int, where: str) -> None:
    """Run `attempt` up to `retries` times; each attempt bounds its own wait."""
    last: Exception | None = None
    for number in range(max(1, retries)):
        try:
            attempt()
        except _RETRYABLE as exc:
            last = exc
            time.sleep(min(0.05 * (number + 1), 0.2))
            continue
        EVENTS_PUBLISHED.labels(kind, "ok").inc()
        return
    EVENTS_PUBLISHED.labels(kind, "failed").inc()
    raise EventBusUnavailableError(
        f"could not publish the {kind} event to {where} after {max(1, retries)} attempts ({last}); "
        "retry later with the same event_id (retries are written once)",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    ) from last


class ConsumerFailedError(Exception):
    """An in-process consumer raised or timed out; the publish is retried, then refused."""


_RETRYABLE = (KafkaError, ConsumerFailedError)


class KafkaBus:
    """kafka-python producer with acks=all and idempotence, created on first use (Kafka may be down at start)."""

    def __init__(self, settings: KafkaSettings, retries: int = 3, timeout_ms: float = 2000.0) -> None:
        self._settings = settings
        self._retries = retries
        self._timeout_ms = int(timeout_ms)
        self._producer: Any = None
        self._lock = threading.Lock()

    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        value = json.dumps(payload, separators=(",", ":")).encode()

        def attempt() -> None:
            future = self._get_producer().send(self._settings.topic, key=key.encode(), value=value)
            future.get(timeout=self._timeout_ms / 1000)

        publish_with_retries(kind, attempt, self._retries, f"Kafka at {self._settings.bootstrap_servers}")

    def _get_producer(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaTimeoutError

        if self._producer is not None:
            return self._producer
        # Bounded: a producer that is still bootstrapping in another thread fails this attempt.
        if not self._lock.acquire(timeout=self._timeout_ms / 1000):
            raise KafkaTimeoutError("the Kafka producer is still connecting")
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self._settings.bootstrap_servers.split(","), client_id="recsys-api",
                    acks="all", enable_idempotence=True, linger_ms=0,
                    bootstrap_timeout_ms=self._timeout_ms, max_block_ms=self._timeout_ms,
                )
            return self._producer
        finally:
            self._lock.release()

    def ready(self) -> bool:
        """A bootstrap server accepts a TCP connection (cheap; no metadata round trip)."""
        for server in self._settings.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.25):
                    return True
            except OSError:
                continue
        return False

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self._timeout_ms / 1000)
            self._producer = None


class InProcessBus:
    """Runs the subscribed consumer handlers on one worker thread (which owns their stores) and waits for them."""

    def __init__(self, retries: int = 3, timeout_ms: float = 2000.0) -> None:
        self._retries = retries
        self._timeout_s = timeout_ms / 1000
        self._handlers: dict[str, list[Handler]] = {}
        self._on_close: list[Callable[[], None]] = []
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recsys-bus")
        self._closed = False

    def subscribe(self, kind: str, handler: Handler, on_close: Callable[[], None] | None = None) -> None:
        self._handlers.setdefault(kind, []).append(handler)
        if on_close is not None:
            self._on_close.append(on_close)

    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        def attempt() -> None:
            future = self._worker.submit(self._dispatch, kind, payload)
            try:
                future.result(timeout=self._timeout_s)
            except FutureTimeout as exc:
                raise ConsumerFailedError(f"the in-process consumers took over {self._timeout_s:.1f} s") from exc
            except Exception as exc:
                raise ConsumerFailedError(f"an in-process consumer failed: {exc!r}") from exc

        publish_with_retries(kind, attempt, self._retries, "the in-process bus")

    def _dispatch(self, kind: str, payload: dict[str, Any]) -> None:
        for handler in self._handlers.get(kind, ()):
            handler(payload)

    def ready(self) -> bool:
        return not self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for callback in self._on_close:
            self._worker.submit(callback).result()
        self._worker.shutdown(wait=True)


class InteractionStoreWriter:
    """The `local` store writer: interactions, and ratings as `rate` interactions, into the interaction store.

    Not-interested and report feedback are not interactions; the service keeps its own exclusions.
    The store is opened lazily on the bus's worker thread, the only thread that uses it.
    """

    def __init__(self, open_store: Callable[[], InteractionStore]) -> None:
        self._open_store = open_store
        self._store: InteractionStore | None = None

    def on_interaction(self, payload: dict[str, Any]) -> None:
        self._write(payload, payload["action_type"], payload.get("session_id"), payload.get("context"))

    def on_feedback(self, payload: dict[str, Any]) -> None:
        if payload["feedback"] == "rating":
            self._write(payload, "rate", None, None)

    def _write(self, payload: dict[str, Any], action: str, session: str | None, context: Any) -> None:
        if self._store is None:
            self._store = self._open_store()
            self._store.migrate()
        row = {
            "event_id": payload["event_id"], "user_id": payload["user_id"], "item_id": payload["item_id"],
            "event_time": pd.Timestamp(payload["event_time"]), "action_type": action,
            "value": payload.get("value"), "session_id": session, "context": context_to_json(context),
        }
        frame = pd.DataFrame([row], columns=list(INTERACTION_COLUMNS))
        frame["value"] = frame["value"].astype("float64")
        self._store.write(frame)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_bus(settings: Settings) -> EventBus:
    """Kafka for `services`; for `local`, the in-process bus with the store writer subscribed."""
    serving = settings.serving
    if settings.profile == "services":
        return KafkaBus(settings.kafka, serving.publish_retries, serving.publish_timeout_ms)
    bus = InProcessBus(serving.publish_retries, serving.publish_timeout_ms)
    writer = InteractionStoreWriter(lambda: open_interactions(settings))
    bus.subscribe("interaction", writer.on_interaction, on_close=writer.close)
    bus.subscribe("feedback", writer.on_feedback)
    return bus
