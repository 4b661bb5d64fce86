"""The recommendation API as a plain FastAPI (ASGI) app; BentoML mounts it, `recsys serve` runs it.

Handlers are a few lines: validation is in `schemas`, keys and rate limits in `auth`, admission control (a
concurrency limit and a short queue per kind of request, then 503, applied in `Edge` before any routing or
validation, so that refusing costs next to nothing) in `admission`, publishing in `bus`, and
every domain error becomes its HTTP status in one exception handler. Service calls and publishing, which
wait on stores, stage timeouts and Kafka, run in the thread pool so that concurrent
requests overlap their waits (the pipeline keeps one store connection per thread); under concurrency this
measured about 1.5x the throughput of calling the service on the event loop, for ~0.1 ms more per request.
"""

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from bento_services.api.admission import Admission
from bento_services.api.auth import API_KEY_HEADER, ApiKeyGate, ForbiddenError
from bento_services.api.directory import UserDirectory
from bento_services.api.edge import RECEIVED_AT, Edge, FastLane, Serve, error_response, json_of, query_of
from bento_services.api.items import ItemCatalog
from bento_services.api.lag import ConsumerLag
from bento_services.api.playground import mount_playground
from bento_services.api.schemas import (
    MAX_ID_LENGTH,
    Accepted,
    CatalogItemOut,
    ConsumersOut,
    ErrorOut,
    FeedbackIn,
    Health,
    InteractionIn,
    ItemIn,
    Readiness,
    RecommendationsOut,
    UserIn,
    UserOut,
)
from bento_services.metrics import count_published, exposition, register_drift_gauge
from bento_services.pipeline.contracts import (
    LOG_ONLY,
    Ranker,
    RecommendationRequest,
    RecommendationResponse,
    RecommendationService,
    RequestContext,
)
from bento_services.serving_log import ServingLog
from recsys.bus import EventBus
from recsys.errors import RecsysError, StoreUnavailableError
from recsys.settings import ServingSettings, Settings
from recsys.stores.catalog import IncompleteItemError

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in (
        (401, "missing or invalid API key"), (422, "invalid query or body: each wrong field and why"),
        (429, "rate limit of this API key exceeded; see Retry-After"),
    )
}
_GET_ERRORS = {**_ERRORS, 503: {"model": ErrorOut, "description": "the server is overloaded (admission control); "
                                "see Retry-After"}}
_POST_ERRORS = {**_ERRORS, 413: {"model": ErrorOut, "description": "body over the size limit"},
                503: {"model": ErrorOut, "description": "the event bus is unavailable, or the server is overloaded "
                      "(admission control); see Retry-After"}}
_ANSWER = TypeAdapter(RecommendationResponse)
RATE_LIMIT_TIMEOUT_S = 0.05  # a shared-bucket read past this falls back to the worker's local share
#: What `debug=true` adds to the body of GET /recommendations (the rest of LOG_ONLY stays in the serving log).
DEBUG_FIELDS = frozenset({"stage_ms", "bucket", "candidates_version"})
#: FastAPI's own OpenTelemetry spans, metrics and logs per request, off: FastAPI turns them on whenever a provider
#: is installed (a host such as BentoML may install one) and no exporter is configured; the API exports its own
#: metrics at /metrics.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
_CONTEXT_ARG = Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LENGTH)]


def create_app(settings: Settings, service: RecommendationService, bus: EventBus, *,
               users: UserDirectory | None = None, lag: ConsumerLag | None = None,
               items: ItemCatalog | None = None, serving_log: ServingLog | None = None,
               close_on_shutdown: bool = False) -> FastAPI:
    """The API over `service` and `bus`.

    `users` is where `POST /users` writes profiles (503 without one). Events of any user are accepted: a
    new user's first event creates them (the `users` consumer). `items` is where the admin route `POST /items`
    writes items (503 without one). With `close_on_shutdown` the app closes service, bus, directory and item
    catalog when it stops. `lag`, when given, is reported by `/readyz`. `serving_log`, when given, gets every
    answer of `GET /recommendations` (`bento_services.serving_log`); it is closed (flushed) on shutdown.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            service.close()
            bus.close()
            if users is not None:
                users.close()
            if items is not None:
                items.close()
            if lag is not None:
                lag.close()
        if serving_log is not None:
            serving_log.close()
        playground.close()

    def accept(kind: str, event: InteractionIn | FeedbackIn) -> Accepted:
        """Apply not-interested, publish: one trip to the thread pool."""
        if isinstance(event, FeedbackIn) and event.kind == "not_interested":
            service.not_interested(event.user_id, event.item_id)
        bus.publish(kind, event.user_id, event.to_payload())
        return Accepted(event_id=event.event_id)

    app = FastAPI(title="recsys", version="1.0", lifespan=lifespan, summary="Recommendations, interactions "
                  "and feedback; every answer names its experiment variant, model version and degradation.",
                  telemetry=NO_TELEMETRY)
    fast = FastLane(settings.serving.fast_lane)
    app.add_middleware(Edge, max_body_bytes=settings.serving.max_body_bytes, gates=admission_of(settings.serving),
                       fast=fast)
    app.add_exception_handler(RecsysError, _domain_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    register_drift_gauge(settings)  # /metrics: the newest drift report's verdict
    gate = ApiKeyGate(settings.serving, shared=_rate_limit_store(settings))
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    async def authorized(key: Annotated[str | None, Security(header)]) -> None:
        gate.check(key)

    guarded = [Depends(authorized)]
    fast.gate = gate
    max_n = settings.serving.max_n
    playground = mount_playground(app, settings, service, gate)

    class RecommendationsQuery(BaseModel):
        """GET /recommendations' query, validated as one model (one pydantic call, not one per parameter)."""

        model_config = ConfigDict(extra="ignore")

        user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
        n: int = Field(50, ge=1, le=max_n, description=f"list length, 1 to {max_n}")
        device: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)
        page: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)
        session_id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)
        as_of: datetime | None = Field(None, description="answer as at this moment (ISO 8601; naive is UTC): "
                                       "replays and simulations; 403 unless serving.allow_as_of")
        variant: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH, description=(
            "debugging aid (the playground): answer as this arm, `control` or a name of serving.experiments, "
            "whatever the user's bucket; the answer and the serving log name it `forced:<name>`, which "
            "experiment reports leave out; 403 unless the key is one of serving.playground_api_keys"))
        debug: bool = Field(False, description="debugging aid: the body also carries `stage_ms` (milliseconds "
                            "per pipeline stage), `bucket` and `candidates_version`")

    async def serve_recommendations(query: RecommendationsQuery, key: str | None, received: float) -> Response:
        """The answer to a validated query from an authorized key (the route's and the fast lane's work)."""
        as_of, variant = query.as_of, query.variant
        if as_of is not None:
            if not settings.serving.allow_as_of:
                raise ForbiddenError("as_of is for replays and simulations; this server does not accept it "
                                     "(serving.allow_as_of)")
            as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
        if variant is not None:
            playground.keys.check(key)
        request = RecommendationRequest(query.user_id, query.n, RequestContext(query.device, query.page,
                                                                               query.session_id),
                                        at=as_of, variant=variant, received_at=received)
        return _recommendations(await run_in_threadpool(answer, request), query.debug)

    @app.get("/recommendations", response_model=RecommendationsOut, dependencies=guarded, responses=_GET_ERRORS)
    async def recommendations(
        http: Request, query: Annotated[RecommendationsQuery, Query()],
        key: Annotated[str | None, Security(header)] = None,
    ) -> Response:
        """Top-n items for the user; headers X-Request-Id, X-Experiment, X-Model-Version and X-Degradation repeat
        the body. Send `request_id` back on `POST /interactions` about these items (it attributes clicks).
        An overloaded server answers 503 with `Retry-After` at once (`serving.admission_*`), or from a cheap rung.

        A user the catalog does not know, or one with no event yet, gets the `cold_start` rung: the popular
        items of their onboarding categories (`POST /users`), else the popular ones.
        """
        return await serve_recommendations(query, key, received_at(http))

    fast.route("GET", "/recommendations", query_of(RecommendationsQuery), serve_recommendations)

    def answer(request: RecommendationRequest) -> RecommendationResponse:
        result = service.recommend(request)
        if serving_log is not None:
            serving_log.record(result)
        return result

    def serve_event(kind: str) -> Serve:
        async def serve(event: Any, _key: str | None, _received: float) -> Response:
            accepted = await run_in_threadpool(accept, kind, event)
            return Response(accepted.model_dump_json(), status_code=202, media_type="application/json")

        return serve

    fast.route("POST", "/interactions", json_of(InteractionIn), serve_event("interaction"))
    fast.route("POST", "/feedback", json_of(FeedbackIn), serve_event("feedback"))

    @app.post("/interactions", status_code=202, response_model=Accepted, dependencies=guarded,
              responses=_POST_ERRORS)
    async def interactions(event: InteractionIn) -> Accepted:
        """Validate one interaction and publish it to the event bus; 202 once the bus holds it."""
        return await run_in_threadpool(accept, "interaction", event)

    @app.post("/feedback", status_code=202, response_model=Accepted, dependencies=guarded,
              responses=_POST_ERRORS)
    async def feedback(event: FeedbackIn) -> Accepted:
        """Publish explicit feedback; `not_interested` also excludes the item from the user's next answers."""
        return await run_in_threadpool(accept, "feedback", event)

    def register(profile: UserIn) -> JSONResponse:
        if users is None:
            raise StoreUnavailableError("this server has no user directory: POST /users is not available")
        row, created = users.upsert(profile.user_id, profile.preferred_categories, profile.language,
                                    profile.country)
        return JSONResponse(UserOut.from_row(row).model_dump(mode="json"), status_code=201 if created else 200)

    @app.post("/users", response_model=UserOut, dependencies=guarded, responses={
        **_ERRORS, 201: {"model": UserOut, "description": "the user was created"},
        413: {"model": ErrorOut, "description": "body over the size limit"},
        503: {"model": ErrorOut, "description": "the catalog is unavailable; nothing was written; see Retry-After"}})
    async def upsert_user(profile: UserIn) -> JSONResponse:
        """Create (201) or update (200) a user's profile: onboarding answers or a profile edit, visible in the
        very next `GET /recommendations`. Fields left out keep their stored values."""
        return await run_in_threadpool(register, profile)

    admin_gate = ApiKeyGate(settings.serving, admin=True, shared=_rate_limit_store(settings))

    async def admin(key: Annotated[str | None, Security(header)]) -> None:
        admin_gate.check(key)

    def publish_item(item: ItemIn) -> JSONResponse:
        if items is None:
            raise StoreUnavailableError("this server has no item catalog: POST /items is not available")
        try:
            row, created = items.upsert(item.item_id, title=item.title, description=item.description,
                                        category=item.category, subcategory=item.subcategory, tags=item.tags,
                                        content_features=item.content_features, is_active=item.is_active)
        except IncompleteItemError as exc:
            raise RequestValidationError([{"type": "missing", "loc": ("body", exc.field), "input": None,
                                           "msg": f"{exc.field} is required to create a new item"}]) from exc
        body = CatalogItemOut.from_row(row).model_dump(mode="json")
        return JSONResponse(body, status_code=201 if created else 200)

    @app.post("/items", response_model=CatalogItemOut, dependencies=[Depends(admin)], responses={
        **_ERRORS, 201: {"model": CatalogItemOut, "description": "the item was created"},
        401: {"model": ErrorOut, "description": "missing or invalid admin key (serving.admin_api_keys)"},
        403: {"model": ErrorOut, "description": "an ordinary API key: this route needs an admin key"},
        413: {"model": ErrorOut, "description": "body over the size limit"},
        503: {"model": ErrorOut, "description": "the catalog is unavailable; nothing was written; see Retry-After"}})
    async def upsert_item(item: ItemIn) -> JSONResponse:
        """Admin: create (201) or update (200) one catalog item; fields left out keep their stored values, a new
        item needs a title. Serving places a new item by its tags and category, without retraining, within
        `serving.new_items_poll_seconds`; `is_active: false` takes an item out of every answer as soon."""
        return await run_in_threadpool(publish_item, item)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """The process answers."""
        return Health()

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz() -> JSONResponse:
        """Each dependency and whether it is usable now; 503 unless all are."""
        checks = {**await run_in_threadpool(service.readiness), "event_bus": await run_in_threadpool(bus.ready)}
        ready = all(checks.values())
        consumers = ConsumersOut.model_validate(lag.report()) if lag is not None else None
        return JSONResponse(Readiness(ready=ready, checks=checks, consumers=consumers).model_dump(),
                            status_code=200 if ready else 503)

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_settings(settings: Settings, *, ranker: Ranker | None = None,
                      candidates_dir: Path | None = None) -> FastAPI:
    """The app over the real pipeline and the profile's bus, closing both on shutdown.

    What `recsys serve` hosts. Without a `ranker` the model store's rankers are loaded (`ranker:latest`
    and the experiments' versions); with none there, answers come from candidate scores.
    """
    from bento_services.api.directory import CatalogUsers
    from bento_services.api.items import CatalogItems
    from bento_services.api.lag import consumer_lag
    from bento_services.pipeline.pipeline import build_pipeline
    from bento_services.serving_log import open_serving_log
    from recsys.backends import open_bus

    if ranker is None:
        from bento_services.pipeline.rankers import load_rankers

        ranker, variants = load_rankers(settings)
    else:
        variants = {}
    service = build_pipeline(settings, candidates_dir=candidates_dir, ranker=ranker, variant_rankers=variants)
    return create_app(settings, service, open_bus(settings, count_published), users=CatalogUsers(settings),
                      lag=consumer_lag(settings), items=CatalogItems(settings),
                      serving_log=open_serving_log(settings), close_on_shutdown=True)


def admission_of(serving: ServingSettings) -> dict[tuple[str, str], Admission]:
    """One worker's admission control by (method, path): GET /recommendations; POST /interactions and /feedback
    share one."""
    wait_s = serving.admission_queue_ms / 1000.0
    events = Admission("events", serving.events_admission_limit, serving.events_admission_queue, wait_s)
    return {("GET", "/recommendations"): Admission("recommendations", serving.admission_limit,
                                                   serving.admission_queue, wait_s),
            ("POST", "/interactions"): events, ("POST", "/feedback"): events}


def received_at(request: Request) -> float:
    """`time.monotonic()` when `Edge` took the request in (now, for an app mounted without it)."""
    return float(getattr(request.state, RECEIVED_AT, None) or time.monotonic())


def _recommendations(answer: RecommendationResponse, debug: bool = False) -> Response:
    body = _ANSWER.dump_json(answer, exclude=set(LOG_ONLY - DEBUG_FIELDS if debug else LOG_ONLY))
    return Response(body, media_type="application/json", headers={
        "X-Request-Id": answer.request_id, "X-Experiment": answer.variant, "X-Model-Version": answer.model_version,
        "X-Degradation": answer.degradation.value,
    })


async def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RecsysError)
    return error_response(exc)


async def _invalid_request(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [{"field": ".".join(str(part) for part in error["loc"]), "reason": _reason(error)}
              for error in exc.errors()]
    return JSONResponse({"error": "invalid_request", "detail": detail}, status_code=422)


def _reason(error: dict[str, Any]) -> str:
    if error["type"] == "json_invalid":
        return f"malformed JSON: {error.get('ctx', {}).get('error', 'cannot parse')}"
    return str(error["msg"]).removeprefix("Value error, ")


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = re.sub(r"\W+", "_", str(exc.detail)).strip("_").lower() if exc.status_code < 500 else "server_error"
    return JSONResponse({"error": kind, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(_: Request, exc: Exception) -> Response:
    """A bug, not a domain error: a JSON 500 (the server still logs the traceback)."""
    return JSONResponse({"error": "internal_error", "detail": f"unexpected {type(exc).__name__}; see the server log"},
                        status_code=500)


def _rate_limit_store(settings: Settings) -> Any:
    """Redis for the per-key buckets every worker shares (`services`); None: in-process buckets (`local`)."""
    if settings.profile != "services":
        return None
    from recsys.stores.redis_client import fail_fast_client

    return fail_fast_client(settings.redis, RATE_LIMIT_TIMEOUT_S)
