"""The API's edge, in front of FastAPI: `Edge` (arrival time, metrics, admission control, the body size limit)
and `FastLane` (the hot routes answered without FastAPI's routing); `error_response` gives every domain error its
one JSON shape, {"error": kind, "detail": message}."""

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bento_services.api.admission import Admission, OverloadedError
from bento_services.api.auth import API_KEY_HEADER, ApiKeyGate
from bento_services.api.playground import PATHS as PLAYGROUND_PATHS
from bento_services.metrics import REQUEST_SECONDS, REQUESTS
from recsys.errors import PayloadTooLargeError, RecsysError

ENDPOINTS = frozenset({"/recommendations", "/interactions", "/feedback", "/users", "/items", "/healthz", "/readyz",
                       "/metrics", *PLAYGROUND_PATHS})
RECEIVED_AT = "recsys_received_at"  # in the request's state: when `Edge` took it in (`time.monotonic()`)


def _kind(exc: Exception) -> str:
    name = type(exc).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_response(exc: RecsysError) -> JSONResponse:
    retry_after = getattr(exc, "retry_after_seconds", None)
    return JSONResponse({"error": _kind(exc), "detail": exc.message}, status_code=exc.http_status,
                        headers=None if retry_after is None else {"Retry-After": str(retry_after)})


# -- the one middleware: metrics per endpoint and status, and the body size limit --------------------------

Parse = Callable[[Scope, bytes], Any]  # the validated input, or None (or a ValidationError): the route decides
Serve = Callable[[Any, str | None, float], Awaitable[Response]]


class FastLane:
    """The hot routes (GET /recommendations, POST /interactions and /feedback) answered straight from `Edge`,
    without FastAPI's routing and per-request dependency solving (a quarter of the event loop's time per cached
    answer, measured with cProfile). Only a request the route would answer takes it: its query or JSON body
    passes the route's own model and its key is checked by the same gate; anything else (an invalid query or
    body, a repeated parameter, a body that is not JSON) returns False and goes to the FastAPI route, which gives
    the usual 422, so the OpenAPI routes stay the one definition of the contract. Domain errors (401, 403, 429,
    503) get the same JSON body as the routes' exception handler."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.gate: ApiKeyGate | None = None
        self.routes: dict[tuple[str, str], tuple[Parse, Serve]] = {}

    def route(self, method: str, path: str, parse: Parse, serve: Serve) -> None:
        self.routes[method, path] = (parse, serve)

    def takes(self, method: str, path: str) -> bool:
        return self.enabled and self.gate is not None and (method, path) in self.routes

    async def __call__(self, scope: Scope, path: str, body: bytes, send: Send) -> bool:
        """True when the request was answered here (`takes` it first)."""
        assert self.gate is not None
        parse, serve = self.routes[scope["method"], path]
        try:
            parsed = parse(scope, body)
        except (ValidationError, ValueError):  # json.JSONDecodeError is a ValueError
            return False
        if parsed is None:
            return False
        key = None
        for name, value in scope["headers"]:
            if name == _KEY_HEADER:
                key = value.decode("latin-1") or None
                break
        try:
            self.gate.check(key)
            response = await serve(parsed, key, scope["state"][RECEIVED_AT])
        except RecsysError as exc:
            response = error_response(exc)
        await response(scope, _no_body, send)
        return True


_KEY_HEADER = API_KEY_HEADER.lower().encode()
_CONTENT_TYPE = b"content-type"


def query_of(model: type[BaseModel]) -> Parse:
    """The query string validated by `model`, as FastAPI reads it; None when a parameter repeats."""

    def parse(scope: Scope, _: bytes) -> BaseModel | None:
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        params = dict(pairs)
        return model.model_validate(params) if len(params) == len(pairs) else None

    return parse


def json_of(model: type[BaseModel]) -> Parse:
    """The JSON body validated by `model` as FastAPI validates it (decoded, then in Python mode); None unless the
    request says it is JSON (FastAPI refuses a body without a JSON content type)."""

    def parse(scope: Scope, body: bytes) -> BaseModel | None:
        kind = next((value.decode("latin-1") for name, value in scope["headers"] if name == _CONTENT_TYPE), "")
        kind = kind.split(";", 1)[0].strip().lower()
        if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
            return None
        return model.model_validate(json.loads(body))

    return parse


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Edge:
    """Pure ASGI: notes when each request came in (`received_at`), times it into REQUEST_SECONDS / REQUESTS,
    admits it through its (method, path)'s `gates` (503 `overloaded` when refused) and refuses bodies over the
    limit (413)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 gates: Mapping[tuple[str, str], Admission] | None = None, fast: FastLane | None = None) -> None:
        self.app = app
        self.fast = fast
        self.max_body_bytes = max_body_bytes
        self.gates = dict(gates or {})
        self._timers = {e: REQUEST_SECONDS.labels(e) for e in (*ENDPOINTS, "other")}
        self._counters: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[RECEIVED_AT] = time.monotonic()  # the pipeline's budget starts here
        path = scope["path"].removeprefix(scope.get("root_path", ""))  # mounted under a prefix by a host
        endpoint = path if path in ENDPOINTS else "other"
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            gate = self.gates.get((scope["method"], path))
            if gate is None:
                await self._handle(scope, receive, send_status, path)
                return
            try:
                await gate.acquire()
            except OverloadedError as refused:
                await error_response(refused)(scope, receive, send_status)
                return
            try:
                await self._handle(scope, receive, send_status, path)
            finally:
                gate.release()
        finally:
            self._timers[endpoint].observe(time.perf_counter() - started)
            counter = self._counters.get((endpoint, status))
            if counter is None:
                counter = self._counters[endpoint, status] = REQUESTS.labels(endpoint, str(status))
            counter.inc()

    async def _handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        fast = self.fast is not None and self.fast.takes(scope["method"], path)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read_body(scope, receive)
            if body is None:
                too_large = PayloadTooLargeError(f"request body over {self.max_body_bytes} bytes")
                await error_response(too_large)(scope, receive, send)
                return
            receive = _replay(body, receive)
        else:
            body = b""
        if fast and await self.fast(scope, path, body, send):  # type: ignore[misc]  # `fast` implies a lane
            return
        await self.app(scope, receive, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to be over the limit."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
