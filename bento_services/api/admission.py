"""Admission control: how many requests of a kind one worker runs at once, and a short bounded queue before that.

Past the queue, or after waiting in it longer than its limit, a request is refused with 503 and `Retry-After`
(`OverloadedError`) instead of queueing behind work the worker cannot finish in time: under overload the clients
get fast answers (most of them 200, the rest a quick 503) rather than every request getting slow. While requests
wait, the admission measures how often a slot changes hands; an arrival whose turn would come after the wait limit
at that pace is refused on arrival, not after waiting the limit out. Runs on the event loop of its worker (no
locks); each worker has its own limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bento_services.metrics import ADMISSION_WAIT_SECONDS, ADMISSIONS
from recsys.errors import RecsysError

#: The weight of the newest gap between hand-offs in their moving average (`Admission.expected_wait_s`).
HANDOFF_WEIGHT = 0.2


class OverloadedError(RecsysError):
    """The worker is running as many requests as it may and its queue is full, or the wait ran past its limit."""

    http_status = 503

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Admission:
    """At most `limit` requests inside at once, at most `queue` more waiting, each for at most `max_wait_s`.

    A freed slot goes to the longest-waiting request (first come, first served). `kind` (`recommendations`,
    `events`) names the requests in the refusal and labels the metrics: `recsys_admissions_total{kind,result}`
    (admitted, queue_full, queue_timeout) and `recsys_admission_wait_seconds{kind}` (the wait of each admitted
    request, 0 when a slot was free).
    """

    def __init__(self, kind: str, limit: int, queue: int, max_wait_s: float, retry_after_s: int = 1) -> None:
        if limit < 1 or queue < 0 or max_wait_s < 0:
            raise ValueError(f"admission of {kind}: limit >= 1, queue >= 0 and max_wait_s >= 0, got "
                             f"{limit}, {queue}, {max_wait_s}")
        self.kind, self.limit, self.queue, self.max_wait_s = kind, limit, queue, max_wait_s
        self.retry_after_s = retry_after_s
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        # While requests wait: when a slot last changed hands, and the mean gap between hand-offs (EWMA).
        self._handoff_at: float | None = None
        self._handoff_gap_s: float | None = None
        self._admitted = ADMISSIONS.labels(kind, "admitted")
        self._full = ADMISSIONS.labels(kind, "queue_full")
        self._timed_out = ADMISSIONS.labels(kind, "queue_timeout")
        self._wait = ADMISSION_WAIT_SECONDS.labels(kind)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def expected_wait_s(self) -> float | None:
        """How long the next request to queue would wait at the pace slots have been changing hands; None while
        that pace is unknown (nobody has waited since the queue last drained)."""
        return None if self._handoff_gap_s is None else (self.waiting + 1) * self._handoff_gap_s

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one slot for the block; yields the seconds waited for it. Raises OverloadedError when refused."""
        waited = await self.acquire()
        try:
            yield waited
        finally:
            self.release()

    async def acquire(self) -> float:
        """Take a slot (call `release` after); the seconds waited, or OverloadedError at once when refused."""
        if self.active < self.limit and not self.waiting:
            self.active += 1
            self._admitted.inc()
            self._wait.observe(0.0)
            return 0.0
        if self.waiting >= self.queue:
            self._full.inc()
            raise self._refusal(f"{self.active} requests running and {self.waiting} waiting, the most it takes")
        gap = self._handoff_gap_s
        if gap is not None and (self.waiting + 1) * gap > self.max_wait_s:
            self._timed_out.inc()
            raise self._refusal(f"{self.waiting} waiting with a slot freed every {gap * 1000:.1f} ms: "
                                f"no slot within {self.max_wait_s * 1000:.0f} ms")
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting.append(waiter)
        timer = loop.call_later(self.max_wait_s, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            self._discard(waiter)
            self._timed_out.inc()
            raise self._refusal(f"no slot freed within {self.max_wait_s * 1000:.0f} ms") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a slot just as the request was abandoned: pass it on
            else:
                self._discard(waiter)
            raise
        finally:
            timer.cancel()
        waited = time.perf_counter() - started
        self._admitted.inc()
        self._wait.observe(waited)
        return waited

    def release(self) -> None:
        """Free a slot: hand it to the longest-waiting request still waiting, else count it free."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self._handed_off()
                waiter.set_result(None)  # the slot changes hands; `active` stays
                return
        self.active -= 1
        self._handoff_at = self._handoff_gap_s = None  # the queue drained: the next crowd is measured afresh

    def _handed_off(self) -> None:
        now = time.perf_counter()
        if self._handoff_at is not None:
            gap = now - self._handoff_at
            self._handoff_gap_s = gap if self._handoff_gap_s is None else (
                (1 - HANDOFF_WEIGHT) * self._handoff_gap_s + HANDOFF_WEIGHT * gap)
        self._handoff_at = now

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):  # already taken off by `release`
            self._waiting.remove(waiter)

    def _refusal(self, why: str) -> OverloadedError:
        return OverloadedError(f"server overloaded: {self.kind} has {why}; retry in {self.retry_after_s} s",
                               retry_after_seconds=self.retry_after_s)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
