"""The web playground, `GET /playground`: pick a user, see why each item is in their list, act on it and watch
the list change. A page served by the API itself, from three files in `static/playground/` (no build step,
nothing fetched from elsewhere: its Content-Security-Policy allows this origin alone).

The page calls the real API, `GET /recommendations` (with `debug=true` for the stage timings, and `variant=`
to force an arm) and `POST /interactions` / `POST /feedback` with the answer's `request_id`, plus the routes
below, which only read:

    GET /playground/api/config        the arms, list limits and the key the page may suggest (no key needed)
    GET /playground/api/user          profile, arm and recent history of `user_id`, items titled
    GET /playground/api/items         titles and genres of `ids` (comma-separated)
    GET /playground/api/features      the ranker's feature values and their status for `user_id`, `item_id`
    GET /playground/api/random-user   a user with events
    GET /playground/api/metrics       requests, p99, cache hit rates and degraded share of GET /recommendations

They take a key of `serving.playground_api_keys` (which must also be in `serving.api_keys`: the page's
buttons post real events with it); the same key is what `variant=` on `GET /recommendations` asks for. With no
playground key configured the page answers 404. No `from __future__ import annotations` here: FastAPI reads the
route functions' annotations, and they name objects local to `mount_playground`.
"""

import hmac
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from bento_services.api.auth import API_KEY_HEADER, ApiKeyGate, ForbiddenError
from bento_services.api.playground_data import PlaygroundData
from bento_services.api.playground_metrics import LiveMetrics
from bento_services.api.schemas import MAX_ID_LENGTH
from bento_services.pipeline.assignment import CONTROL
from bento_services.pipeline.contracts import RecommendationService
from recsys.errors import InvalidInputError, NotFoundError
from recsys.events import ACTION_TYPES
from recsys.settings import ServingSettings, Settings

PAGE = "/playground"
_FILES = {f"{PAGE}": ("index.html", "text/html; charset=utf-8"),
          f"{PAGE}/app.js": ("app.js", "text/javascript; charset=utf-8"),
          f"{PAGE}/app.css": ("app.css", "text/css; charset=utf-8")}
_API = ("config", "user", "items", "features", "random-user", "metrics")
#: Every path the playground answers (the host routes them straight to the API: `hosting.OwnRoutes`).
PATHS = frozenset({*_FILES, *(f"{PAGE}/api/{name}" for name in _API)})
MAX_ITEMS = 200
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_UserId = Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)]


class PlaygroundKeys:
    """The keys that may use the debugging aids (a forced variant, the reads above): `serving.playground_api_keys`."""

    def __init__(self, serving: ServingSettings) -> None:
        self._keys = [key.get_secret_value().encode() for key in serving.playground_api_keys]
        ordinary = {key.get_secret_value() for key in serving.api_keys}
        # The dev default, when this server still runs with it, is suggested by the page; a real key never is.
        default = {key.get_secret_value() for key in ServingSettings.model_fields["api_keys"].get_default(
            call_default_factory=True)}
        self.suggested = next((k.decode() for k in self._keys if k.decode() in ordinary & default), None)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, presented: str | None) -> None:
        """ForbiddenError (403) unless `presented` is a playground key (the ordinary gate has passed it already)."""
        candidate = (presented or "").encode()
        if not any(hmac.compare_digest(key, candidate) for key in self._keys):
            raise ForbiddenError("this is a debugging aid of the playground: it needs a key of "
                                 f"serving.playground_api_keys in the {API_KEY_HEADER} header")


class Playground:
    """The mounted playground: its keys (asked by `GET /recommendations?variant=`) and its reads."""

    def __init__(self, settings: Settings, service: RecommendationService) -> None:
        self.keys = PlaygroundKeys(settings.serving)
        self.data = PlaygroundData(settings, service)
        self.metrics = LiveMetrics()
        folder = resources.files("bento_services.api") / "static" / "playground"
        self.files = {path: (folder.joinpath(name).read_bytes(), kind) for path, (name, kind) in _FILES.items()}

    def close(self) -> None:
        self.data.close()


def mount_playground(app: FastAPI, settings: Settings, service: RecommendationService,
                     gate: ApiKeyGate) -> Playground:
    """Add the page, its files and its read routes to `app`; `gate` is the app's ordinary key gate."""
    playground = Playground(settings, service)
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    async def playground_key(key: Annotated[str | None, Security(header)]) -> None:
        gate.check(key)
        playground.keys.check(key)

    keyed = [Depends(playground_key)]

    def static(path: str) -> Any:
        async def serve() -> Response:
            if not playground.keys.enabled:
                raise NotFoundError("the playground is off on this server (serving.playground_api_keys is empty)")
            body, kind = playground.files[path]
            return Response(body, media_type=kind, headers={"Cache-Control": "no-cache",
                                                            "Content-Security-Policy": _CSP})
        return serve

    for path in _FILES:
        app.add_api_route(path, static(path), methods=["GET"], include_in_schema=path == PAGE,
                          response_class=Response, summary="the web playground" if path == PAGE else None)

    @app.get(f"{PAGE}/api/config", include_in_schema=False)
    async def config() -> JSONResponse:
        serving = settings.serving
        variants = [{"name": CONTROL, "experiment": None, "buckets": None, "ranker_version": None,
                     "diversity_boost": 0.0, "shuffle": False}]
        variants += [v.model_dump(mode="json") for v in serving.experiments]
        return JSONResponse({"enabled": playground.keys.enabled, "suggested_key": playground.keys.suggested,
                             "variants": variants, "max_n": serving.max_n, "actions": list(ACTION_TYPES),
                             "features": getattr(service, "assembler", None) is not None,
                             "key_header": API_KEY_HEADER})

    @app.get(f"{PAGE}/api/user", dependencies=keyed, include_in_schema=False)
    async def user(user_id: _UserId) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(playground.data.user, user_id))

    @app.get(f"{PAGE}/api/items", dependencies=keyed, include_in_schema=False)
    async def items(ids: Annotated[str, Query(min_length=1, max_length=MAX_ITEMS * (MAX_ID_LENGTH + 1))]
                    ) -> JSONResponse:
        wanted = [i for i in ids.split(",") if i]
        if len(wanted) > MAX_ITEMS:
            raise InvalidInputError(f"at most {MAX_ITEMS} ids at a time, got {len(wanted)}")
        return JSONResponse(await run_in_threadpool(playground.data.items, wanted))

    @app.get(f"{PAGE}/api/features", dependencies=keyed, include_in_schema=False)
    async def features(user_id: _UserId, item_id: _UserId) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(playground.data.features, user_id, item_id))

    @app.get(f"{PAGE}/api/random-user", dependencies=keyed, include_in_schema=False)
    async def random_user() -> JSONResponse:
        return JSONResponse({"user_id": await run_in_threadpool(playground.data.random_user)})

    @app.get(f"{PAGE}/api/metrics", dependencies=keyed, include_in_schema=False)
    async def metrics() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(playground.metrics.summary))

    return playground
