"""One trivial route, `GET /items` answering 50 items as JSON, hosted several ways for the overhead benchmark.

`app` is the plain Starlette application (served by uvicorn directly); `TrivialDefault` and `TrivialQuiet`
mount it in BentoML services without our hosting fixes (`bench.trivial_hosted` has the fixed ones).
"""

from __future__ import annotations

from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench import gc_probe


def fifty_items() -> list[dict[str, Any]]:
    return [{"item_id": str(i), "rank": i + 1, "score": 1.0 / (i + 1), "source": "popularity",
             "explanation": "popular"} for i in range(50)]


async def items(request: Request) -> JSONResponse:
    return JSONResponse({"items": fifty_items()})


app = Starlette(routes=[Route("/items", items), *gc_probe.routes()])


QUIET = {"metrics": {"enabled": False}, "logging": {"access": {"enabled": False}}}


@bentoml.service(name="trivial_default")
@bentoml.asgi_app(app)
class TrivialDefault:
    """The plain application mounted in a BentoML service with BentoML's default configuration."""


@bentoml.service(name="trivial_quiet", **QUIET)
@bentoml.asgi_app(app)
class TrivialQuiet:
    """Mounted, with access logging and BentoML's metrics off (the issue's second measurement)."""
