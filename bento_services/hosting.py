"""How the API is hosted in BentoML: the service configuration and one fix to BentoML 1.4's timeout middleware.

Measured in `bench/bentoml_overhead.py` (the write-up is in the README's serving section):

* BentoML wraps every request in `TimeoutMiddleware`, which arms `loop.call_later(timeout, ...)` and never
  cancels it. The timer handle keeps the request's `contextvars.Context` alive for the whole timeout (60 s by
  default), and with it the OpenTelemetry server span that the outer middleware put in that context (BentoML's
  sampler records spans even at sample rate 0): about 20 tracked objects per request survive into the
  collector's oldest generation, grow it by tens of thousands of objects a minute and trigger full
  collections that traverse all of it, the 100-600 ms stalls at p99. `fix_timeout_middleware()` cancels the
  timer when the request ends; nothing outlives its request and the cyclic collector stays idle.
  The configuration cannot remove the middleware (`traffic.timeout` must be positive).
* Per-request work the platform does not use is switched off: access logging (one formatted log line per
  request), BentoML's own Prometheus middleware (the API exports its own metrics at `/metrics`), and
  OpenTelemetry spans for the API routes (no trace exporter is configured; the spans were only recorded).
* `freeze_startup_heap()` moves the objects built at start-up (models, index, feature-store clients) out of
  the collector's view, so the rare full collection no longer traverses them.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client.core import HistogramMetricFamily

from bento_services.metrics import register_scrape_time
from recsys.private.bentoml import traffic

TIMEOUT_S = 10.0  # whole-request ceiling; the pipeline's own stage timeouts are far shorter
UNTRACED_ROUTES = "/recommendations,/interactions,/feedback,/healthz,/readyz,/livez,/metrics,/items"

SERVICE_CONFIG: dict[str, Any] = {
    "workers": 1,  # two cores: one for the worker, one for the rest (load generator, Redis, Kafka)
    "traffic": {"timeout": TIMEOUT_S},
    "metrics": {"enabled": False},
    "logging": {"access": {"enabled": False}},
    "tracing": {"excluded_urls": UNTRACED_ROUTES},
}


class _CancellingTimeoutMiddleware(traffic.TimeoutMiddleware):
    """BentoML's timeout middleware, with its timer cancelled once the request has finished."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, _send))
        try:
            await waiter
        except TimeoutError:
            if task.cancel():
                await _timeout_response(self.timeout)(scope, receive, send)
        else:
            await task
        finally:
            timer.cancel()


def _timeout_response(timeout: float) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"Not able to process the request in {timeout} seconds"}, status_code=504)


class LateApp:
    """The ASGI app BentoML mounts; the service plugs the API in once its models are loaded (503 before)."""

    def __init__(self) -> None:
        self.app: Any = None

    def plug(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            from starlette.responses import JSONResponse

            await JSONResponse({"error": "the service is still loading"}, status_code=503)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class OwnRoutes:
    """Sends the API's own `paths` straight to it: BentoML routes /healthz and /readyz to its own probes
    before any mounted app, and ours report each dependency."""

    def __init__(self, app: Any, api: LateApp, paths: frozenset[str]) -> None:
        self.app, self.api, self.paths = app, api, paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            await self.api(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def fix_timeout_middleware() -> None:
    """Make BentoML build its apps with the cancelling timeout middleware (idempotent)."""
    traffic.TimeoutMiddleware = _CancellingTimeoutMiddleware  # type: ignore[misc]


def freeze_startup_heap() -> None:
    """Collect once, then exempt every surviving start-up object from later collections."""
    gc.collect()
    gc.freeze()


_GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5)


class GcPauses:
    """Pauses of the cyclic collector per generation, exposed as the histogram `recsys_gc_pause_seconds`.

    The gc callback must take no lock and create no metric: it runs inside whatever code allocated
    when the collection started, and prometheus_client holds a module-wide lock while it creates
    multiprocess values (BentoML workers run in multiprocess mode). A callback calling `.labels()`
    there re-entered that lock and hung the worker for good. So the callback only adds to plain
    lists, and `collect` (at scrape time) turns them into the histogram.
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.counts = [[0] * (len(_GC_BUCKETS) + 1) for _ in range(3)]  # per bucket, +Inf last
        self.sums = [0.0, 0.0, 0.0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        pause, generation = time.perf_counter() - self.started, info["generation"]
        slot = 0
        while slot < len(_GC_BUCKETS) and pause > _GC_BUCKETS[slot]:
            slot += 1
        self.counts[generation][slot] += 1
        self.sums[generation] += pause

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily("recsys_gc_pause_seconds", "Pauses of the cyclic garbage collector by "
                                       "generation", labels=["generation"])
        for generation in range(3):
            counts, running = self.counts[generation], 0
            buckets = []
            for edge, count in zip((*map(str, _GC_BUCKETS), "+Inf"), counts):
                running += count
                buckets.append((edge, running))
            family.add_metric([str(generation)], buckets, self.sums[generation])
        return [family]


_GC_PAUSES = GcPauses()
register_scrape_time(_GC_PAUSES)  # type: ignore[arg-type]  # a custom collector: `collect` is all it needs


def export_gc_pauses() -> None:
    """Time every collection into `/metrics` (a stall there is what the timer fix removed; keep watching)."""
    if _GC_PAUSES not in gc.callbacks:
        gc.callbacks.append(_GC_PAUSES)
