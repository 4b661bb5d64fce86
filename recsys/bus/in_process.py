"""The `local` bus: the consumers run in this process, on one worker thread, before `publish` returns.

`attach` subscribes a streaming consumer (`recsys.streaming.consumers`) to every kind: each event is
validated as the Kafka consumers validate it, then handed to the consumer as a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from recsys.bus.base import ConsumerFailedError, Handler, Outcome, ignore_outcome, publish_with_retries
from recsys.streaming.consumers import Consumer
from recsys.streaming.decode import validate


class InProcessBus:
    """Runs the subscribed consumer handlers on one worker thread (which owns their stores) and waits for them."""

    def __init__(self, retries: int = 3, timeout_ms: float = 2000.0, outcome: Outcome = ignore_outcome) -> None:
        self._retries = retries
        self._outcome = outcome
        self._timeout_s = timeout_ms / 1000
        self._handlers: dict[str, list[Handler]] = {}
        self._on_close: list[Callable[[], None]] = []
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recsys-bus")
        self._closed = False

    def subscribe(self, kind: str, handler: Handler, on_close: Callable[[], None] | None = None) -> None:
        self._handlers.setdefault(kind, []).append(handler)
        if on_close is not None:
            self._on_close.append(on_close)

    def attach(self, consumer: Consumer) -> None:
        def handle(payload: dict[str, Any]) -> None:
            event = dict(payload)
            validate(event)
            consumer.handle([event])

        for kind in ("interaction", "feedback"):
            self._handlers.setdefault(kind, []).append(handle)
        self._on_close.append(consumer.close)

    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        def attempt() -> None:
            future = self._worker.submit(self._dispatch, kind, payload)
            try:
                future.result(timeout=self._timeout_s)
            except FutureTimeout as exc:
                raise ConsumerFailedError(f"the in-process consumers took over {self._timeout_s:.1f} s") from exc
            except Exception as exc:
                raise ConsumerFailedError(f"an in-process consumer failed: {exc!r}") from exc

        publish_with_retries(kind, attempt, self._retries, "the in-process bus", self._outcome)

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
