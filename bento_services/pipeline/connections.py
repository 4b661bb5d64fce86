"""Store connections as the request path uses them: one per thread, reopened after a failure.

SQLite connections may not cross threads and a PostgreSQL connection does not come back after the
server restarts, so each thread opens its own, and a failure drops it: the next call reconnects,
but not before `retry_seconds`, so a stopped server costs one refused connect per interval, not one
per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from recsys.errors import StoreUnavailableError
from recsys.stores.base import Store

S = TypeVar("S", bound=Store)
R = TypeVar("R")
log = logging.getLogger(__name__)


class Connection(Generic[S]):
    """A store opened lazily per thread by `factory`; `call` runs one operation on it."""

    def __init__(self, name: str, factory: Callable[[], S], retry_seconds: float = 5.0) -> None:
        self.name, self._factory, self.retry_seconds = name, factory, retry_seconds
        self._local = threading.local()
        self._opened: list[S] = []
        self._lock = threading.Lock()
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while a recent failure is within its retry interval."""
        return time.monotonic() >= self._down_until

    def store(self) -> S:
        """This thread's store, opened on first use; raises StoreUnavailableError while down."""
        store: S | None = getattr(self._local, "store", None)
        if store is not None:
            return store
        if not self.available:
            raise StoreUnavailableError(f"{self.name} is unavailable; retrying in at most {self.retry_seconds:.0f}s")
        try:
            store = self._factory()
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises, the store is down
            self._mark_down(exc)
            raise StoreUnavailableError(f"{self.name} did not answer: {exc}") from exc
        self._local.store = store
        with self._lock:
            self._opened.append(store)
        return store

    def call(self, operation: Callable[[S], R]) -> R:
        """Run `operation` on this thread's store; any failure drops the connection and re-raises."""
        store = self.store()
        try:
            return operation(store)
        except Exception as exc:
            self._local.store = None
            self._close(store)
            self._mark_down(exc)
            raise

    def _mark_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_seconds
        log.warning("%s failed: %r; next attempt in %.0fs", self.name, exc, self.retry_seconds)

    def _close(self, store: S) -> None:
        with self._lock:
            if store in self._opened:
                self._opened.remove(store)
        try:
            store.close()
        except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail too
            log.debug("closing %s failed: %r", self.name, exc)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for store in opened:
            try:
                store.close()
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.debug("closing %s failed: %r", self.name, exc)
