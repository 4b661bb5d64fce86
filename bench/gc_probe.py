"""Looks inside a serving process: how often the cyclic collector runs per generation and for how long,
and which object types accumulate in the collector's generations between two snapshots.

`routes()` exposes it over HTTP (`/_probe/gc`, `/_probe/types`) so the overhead benchmark can read the
figures of the very worker process that served its load.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_started: dict[int, float] = {}
_stats: dict[int, dict[str, float]] = {g: {"count": 0, "total_ms": 0.0, "max_ms": 0.0, "collected": 0}
                                      for g in range(3)}
_snapshot: Counter[str] = Counter()


def _callback(phase: str, info: dict[str, int]) -> None:
    generation = info["generation"]
    if phase == "start":
        _started[generation] = time.perf_counter()
        return
    elapsed = (time.perf_counter() - _started.pop(generation, time.perf_counter())) * 1e3
    row = _stats[generation]
    row["count"] += 1
    row["total_ms"] += elapsed
    row["max_ms"] = max(row["max_ms"], elapsed)
    row["collected"] += info.get("collected", 0)


def install() -> None:
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


def _types() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


async def gc_stats(request: Request) -> JSONResponse:
    if request.query_params.get("reset"):
        for row in _stats.values():
            row.update(count=0, total_ms=0.0, max_ms=0.0, collected=0)
    return JSONResponse({
        "generations": {str(g): row for g, row in _stats.items()},
        "count": gc.get_count(), "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
        "tracked": [len(gc.get_objects(g)) for g in range(3)],
    })


async def type_growth(request: Request) -> JSONResponse:
    """`?mark=1` takes a snapshot; a plain call answers the types that grew since, largest first."""
    global _snapshot
    now = _types()
    if request.query_params.get("mark"):
        _snapshot = now
        return JSONResponse({"marked": sum(now.values())})
    growth = {name: n - _snapshot.get(name, 0) for name, n in now.items() if n - _snapshot.get(name, 0) > 0}
    top: list[tuple[str, Any]] = sorted(growth.items(), key=lambda kv: -kv[1])[:30]
    return JSONResponse({"total": sum(now.values()), "grew": dict(top)})


def routes() -> list[Route]:
    install()
    return [Route("/_probe/gc", gc_stats), Route("/_probe/types", type_growth)]
