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

import time
from collections.abc import Callable
from typing import Any, Protocol

from kafka.errors import KafkaError

from recsys.errors import EventBusUnavailableError

Handler = Callable[[dict[str, Any]], None]
RETRY_AFTER_SECONDS = 5
#: Told each publish's result, ("interaction", "ok") say; the service counts them in its metrics.
Outcome = Callable[[str, str], None]


def ignore_outcome(kind: str, result: str) -> None:
    """The default `Outcome`: nobody counts."""


class EventBus(Protocol):
    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Publish one event of `kind` keyed by `key`; raises EventBusUnavailableError after bounded retries."""
        ...

    def ready(self) -> bool:
        """Whether an event published now would likely be accepted."""
        ...

    def close(self) -> None: ...


def publish_with_retries(kind: str, attempt: Callable[[], None], retries: int, where: str,
                         outcome: Outcome = ignore_outcome) -> None:
    """Run `attempt` up to `retries` times; each attempt bounds its own wait. `outcome(kind, "ok"|"failed")`."""
    last: Exception | None = None
    for number in range(max(1, retries)):
        try:
            attempt()
        except _RETRYABLE as exc:
            last = exc
            time.sleep(min(0.05 * (number + 1), 0.2))
            continue
        outcome(kind, "ok")
        return
    outcome(kind, "failed")
    raise EventBusUnavailableError(
        f"could not publish the {kind} event to {where} after {max(1, retries)} attempts ({last}); "
        "retry later with the same event_id (retries are written once)",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    ) from last


class ConsumerFailedError(Exception):
    """An in-process consumer raised or timed out; the publish is retried, then refused."""


class PublishAttemptError(Exception):
    """One attempt to publish to Kafka failed (not acknowledged in time, refused, the local queue full); the
    publish is retried, then refused."""


_RETRYABLE = (KafkaError, ConsumerFailedError, PublishAttemptError)
