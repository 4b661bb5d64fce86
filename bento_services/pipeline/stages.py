"""Running one pipeline stage under its time budget, with its latency and failures in the metrics.

A stage runs on a small thread pool of its own and the request waits at most its budget for it. A
stage past its budget is abandoned (its thread finishes in the background and its answer is
dropped), so a slow ranker or index costs the request one timeout, never more. When every thread
of a stage is still stuck in abandoned calls (a server that hangs), the stage fails at once
instead of queueing, and one stuck dependency cannot starve the other stages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
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


class StageRunner:
    """Runs stage calls with per-stage budgets; `timeouts_ms` maps stage name to its budget."""

    def __init__(self, timeouts_ms: Mapping[str, float], workers: int = 4) -> None:
        self.timeouts_ms = {**DEFAULT_BUDGETS_MS, **timeouts_ms}
        self.workers = workers
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()

    def run(self, stage: str, call: Callable[[], T], timings: dict[str, float]) -> T:
        """The call's result, or StageFailed when it raised, ran past its budget or found no free thread."""
        started = time.perf_counter()
        budget = self.timeouts_ms.get(stage)
        try:
            if budget is None:
                return call()
            future = self._lane(stage).submit(call)
            if future is None:
                raise StageFailed(stage, "saturated", None)
            try:
                return future.result(timeout=budget / 1000.0)
            except FutureTimeout as exc:
                raise StageFailed(stage, "timeout", exc) from exc
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
