"""The hosting fix (BentoML's timeout timer cancelled per request), the request routing and the model-store helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bento_services import hosting
from bento_services.models import RANKER_MODEL, CandidateArtifactError, save_candidates
from recsys.private.bentoml import traffic

ORIGINAL = traffic.TimeoutMiddleware


async def _ok(_: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def _slow(_: Request) -> JSONResponse:
    await asyncio.sleep(1.0)
    return JSONResponse({"ok": True})


def _live_timers() -> int:
    loop: Any = asyncio.get_running_loop()
    return sum(1 for handle in loop._scheduled if not handle.cancelled())


async def _timers_left(middleware: type, requests: int = 20) -> int:
    app = middleware(Starlette(routes=[Route("/", _ok)]), timeout=60.0)
    before = _live_timers()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for _ in range(requests):
            assert (await client.get("/")).status_code == 200
    return _live_timers() - before


def test_bentoml_timeout_middleware_leaves_one_live_timer_per_request() -> None:
    """The library bug the fix exists for; when this fails BentoML fixed it and `fix_timeout_middleware` can go."""
    assert asyncio.run(_timers_left(ORIGINAL)) == 20


def test_fixed_middleware_leaves_no_timer_behind() -> None:
    assert asyncio.run(_timers_left(hosting._CancellingTimeoutMiddleware)) == 0


def test_fixed_middleware_still_times_out() -> None:
    async def call() -> httpx.Response:
        app = hosting._CancellingTimeoutMiddleware(Starlette(routes=[Route("/", _slow)]), timeout=0.05)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get("/")

    answer = asyncio.run(call())
    assert answer.status_code == 504 and "0.05 seconds" in answer.json()["error"]


def test_fix_replaces_the_class_bentoml_builds_apps_with(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "TimeoutMiddleware", ORIGINAL)
    hosting.fix_timeout_middleware()
    from bentoml._internal.server.http.traffic import TimeoutMiddleware  # what base_app imports per app

    assert TimeoutMiddleware is hosting._CancellingTimeoutMiddleware


def test_own_routes_go_to_the_api_and_the_rest_to_bentoml() -> None:
    api = hosting.LateApp()

    async def bentoml_probe(_: Request) -> PlainTextResponse:
        return PlainTextResponse("bentoml")

    bentoml_app = Starlette(routes=[Route("/healthz", bentoml_probe), Route("/livez", bentoml_probe)])
    app = hosting.OwnRoutes(bentoml_app, api=api, paths=frozenset({"/healthz"}))

    async def call(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(path)

    assert asyncio.run(call("/healthz")).status_code == 503  # the API is still loading
    api.plug(Starlette(routes=[Route("/healthz", _ok)]))
    assert asyncio.run(call("/healthz")).json() == {"ok": True}
    assert asyncio.run(call("/livez")).text == "bentoml"


def test_ranker_model_name_is_the_one_training_saves() -> None:
    from recsys.models.ranker import MODEL_NAME

    assert RANKER_MODEL == MODEL_NAME


def test_saving_a_folder_without_an_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CandidateArtifactError, match="recsys build-candidates"):
        save_candidates(tmp_path / "not-an-artifact", home=tmp_path / "bentoml")


def test_gc_pause_callback_takes_no_metric_lock_and_scrapes_as_a_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    """The callback runs inside whatever allocated; in BentoML's multiprocess mode a `.labels()` there
    re-entered prometheus_client's global lock and hung the worker. It must only count."""
    from prometheus_client import generate_latest
    from prometheus_client.metrics import MetricWrapperBase

    from bento_services.hosting import GcPauses
    from bento_services.metrics import REGISTRY

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the gc callback touched prometheus_client")

    pauses = GcPauses()
    monkeypatch.setattr(MetricWrapperBase, "labels", forbidden)
    pauses("start", {"generation": 2})
    pauses("stop", {"generation": 2})
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0})
    monkeypatch.undo()
    (family,) = pauses.collect()
    samples = {(s.name, s.labels.get("generation"), s.labels.get("le")): s.value for s in family.samples}
    assert samples[("recsys_gc_pause_seconds_count", "2", None)] == 1
    assert samples[("recsys_gc_pause_seconds_bucket", "2", "+Inf")] == 1
    assert samples[("recsys_gc_pause_seconds_count", "1", None)] == 0
    assert b"recsys_gc_pause_seconds_count" in generate_latest(REGISTRY)
