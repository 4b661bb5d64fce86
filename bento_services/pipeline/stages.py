"""Running one pipeline stage under its time budget, with its latency and failures in the metrics.

A stage runs on a small thread pool of its own and the request waits at most its budget for it. A
stage past its budget is abandoned (its thread finishes in the background and its answer is
dropped), so a slow ranker or index costs the request one timeout, never more. When every thread
of a stage is still stuck in abandoned calls (a server that hangs), the stage fails at once
instead of queueing, and one stuck dependency cannot starve the other stages.

A pure-CPU stage (no I/O that could hang: candidate generation, ranking; `serving.inline_stages`) runs on the
request's own thread once it has proven cheap: after INLINE_AFTER calls whose mean (an exponentially weighted
one) stayed under INLINE_SHARE of its budget. The hop to a pool thread and back costs two hand-offs of the
interpreter lock, which under load wait for whichever thread holds it. Inline, a call that ends past its budget
still fails as a timeout (its answer is dropped: the request degrades as it would have) and sends the stage back
to its pool until it proves cheap again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from bento_services.metrics import STAGE_FAILURES, STAGE_SECONDS

T = TypeVar("T")
log = logging.getLogger(__name__)
#: Budgets of the stages the settings do not name (`serving.stage_timeout_ms` overrides them).
DEFAULT_BUDGETS_MS = {"lookup": 100.0, "precomputed": 50.0, "user_state": 100.0}
#: `StageFailed.reason`s that mean the server is busy (or a dependency hangs), not that the stage is broken.
BUSY_REASONS = frozenset({"timeout", "saturated"})
INLINE_AFTER = 20  # calls on the pool before an inline stage may run on the request's thread
INLINE_SHARE = 0.25  # ... when its weighted mean duration stays under this share of its budget
EWMA_WEIGHT = 0.1  # weight of the newest call in that mean


class StageFailed(Exception):
    """A stage raised, ran past its budget, or had no free thread; the pipeline takes the next rung."""

    def __init__(self, stage: str, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(f"stage '{stage}' failed ({reason}): {cause!r}")
        self.stage, self.reason, self.cause = stage, reason, cause


class _Lane:
    """One stage's threads and how many of them are busy."""

    def __init__(self, stage: str, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"recsys-{stage}")
        self.workers, self.busy = workers, 0
        self.lock = threading.Lock()

    def submit(self, call: Callable[[], T]) -> Future[T] | None:
        """The running call, or None when every thread is busy."""
        with self.lock:
            if self.busy >= self.workers:
                return None
            self.busy += 1
        future = self.pool.submit(call)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[Any]) -> None:
        with self.lock:
            self.busy -= 1


class _Pace:
    """An inline-eligible stage's record: calls on its pool so far and their weighted mean duration."""

    def __init__(self) -> None:
        self.calls, self.mean_ms = 0, 0.0

    def inline(self, budget_ms: float) -> bool:
        return self.calls >= INLINE_AFTER and self.mean_ms < budget_ms * INLINE_SHARE

    def observe(self, elapsed_ms: float) -> None:
        self.mean_ms = elapsed_ms if self.calls == 0 else self.mean_ms + EWMA_WEIGHT * (elapsed_ms - self.mean_ms)
        self.calls += 1

    def reset(self) -> None:
        self.calls, self.mean_ms = 0, 0.0


class StageRunner:
    """Runs stage calls with per-stage budgets; `timeouts_ms` maps stage name to its budget; `inline` names the
    pure-CPU stages that may run on the request's thread once proven cheap (see the module)."""

    def __init__(self, timeouts_ms: Mapping[str, float], workers: int = 4, inline: Collection[str] = ()) -> None:
        self.timeouts_ms = {**DEFAULT_BUDGETS_MS, **timeouts_ms}
        self.workers = workers
        self._lanes: dict[str, _Lane] = {}
        self._paces = {stage: _Pace() for stage in inline}
        self._lock = threading.Lock()

    def inline(self, stage: str) -> bool:
        """Whether the stage's next call runs on the caller's thread."""
        pace, budget = self._paces.get(stage), self.timeouts_ms.get(stage)
        return pace is not None and budget is not None and pace.inline(budget)

    def run(self, stage: str, call: Callable[[], T], timings: dict[str, float]) -> T:
        """The call's result, or StageFailed when it raised, ran past its budget or found no free thread."""
        started = time.perf_counter()
        budget = self.timeouts_ms.get(stage)
        pace = self._paces.get(stage)
        try:
            if budget is None:
                return call()
            if pace is not None and pace.inline(budget):
                result = call()
                if (time.perf_counter() - started) * 1000.0 > budget:
                    pace.reset()  # back to its pool until it proves cheap again
                    raise StageFailed(stage, "timeout", None)
                return result
            future = self._lane(stage).submit(call)
            if future is None:
                raise StageFailed(stage, "saturated", None)
            try:
                result = future.result(timeout=budget / 1000.0)
            except FutureTimeout as exc:
                raise StageFailed(stage, "timeout", exc) from exc
            if pace is not None:
                pace.observe((time.perf_counter() - started) * 1000.0)
            return result
        except StageFailed as failed:
            self._failed(stage, failed.reason, failed.cause)
            raise
        except Exception as exc:  # noqa: BLE001 - any stage error takes the next rung, never the request
            self._failed(stage, "error", exc)
            raise StageFailed(stage, "error", exc) from exc
        finally:
            elapsed = time.perf_counter() - started
            STAGE_SECONDS.labels(stage).observe(elapsed)
            timings[stage] = round(elapsed * 1000.0, 3)

    def _lane(self, stage: str) -> _Lane:
        lane = self._lanes.get(stage)
        if lane is None:
            with self._lock:
                lane = self._lanes.setdefault(stage, _Lane(stage, self.workers))
        return lane

    def _failed(self, stage: str, reason: str, cause: BaseException | None) -> None:
        STAGE_FAILURES.labels(stage, reason).inc()
        log.warning("stage %s failed (%s): %r", stage, reason, cause)

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.pool.shutdown(wait=False, cancel_futures=True)
