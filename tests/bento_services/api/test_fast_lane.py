"""The fast lane (`http.FastLane`) answers exactly what the FastAPI routes answer: GET /recommendations,
POST /interactions and POST /feedback.

Each request below goes to two apps over their own fake service and bus: one as served, one with the lane
switched off (every request through FastAPI's routing and dependencies). Status, body (generated ids aside), the
headers a client reads, what reached the bus, and the rate limit's token count must be the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bento_services.api import http as api
from recsys.settings import Settings
from tests.bento_services.conftest import API_KEY, FakeService, RecordingBus, api_settings, served

PLAYGROUND_KEY = "play-key"
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("plain", {"user_id": "u1"}, API_KEY),
    ("every parameter", {"user_id": "u2", "n": "7", "device": "ios", "page": "home", "session_id": "s1",
                         "debug": "true"}, API_KEY),
    ("naive as_of", {"user_id": "u1", "n": "3", "as_of": "2024-05-01T10:00:00"}, API_KEY),
    ("aware as_of", {"user_id": "u1", "n": "3", "as_of": "2024-05-01T10:00:00+02:00"}, API_KEY),
    ("unknown parameter", {"user_id": "u1", "n": "2", "colour": "blue"}, API_KEY),
    ("unknown user", {"user_id": "nobody"}, API_KEY),
    ("n too large", {"user_id": "u1", "n": "201"}, API_KEY),
    ("n not a number", {"user_id": "u1", "n": "ten"}, API_KEY),
    ("empty user", {"user_id": ""}, API_KEY),
    ("no user", {"n": "5"}, API_KEY),
    ("bad as_of", {"user_id": "u1", "as_of": "yesterday"}, API_KEY),
    ("no key", {"user_id": "u1"}, None),
    ("empty key", {"user_id": "u1"}, ""),
    ("wrong key", {"user_id": "u1"}, "not-a-key"),
    ("no key and a bad query", {"n": "0"}, None),
    ("forced variant, ordinary key", {"user_id": "u1", "variant": "control"}, API_KEY),
    ("forced variant, playground key", {"user_id": "u1", "n": "4", "variant": "control"}, PLAYGROUND_KEY),
]
READ_HEADERS = ("content-type", "x-experiment", "x-model-version", "x-degradation", "retry-after")
CLICK = {"user_id": "u1", "item_id": "i7", "action_type": "click"}
JSON = "application/json"
#: (case, path, body, content type, key)
EVENT_CASES: list[tuple[str, str, bytes, str | None, str | None]] = [
    ("click", "/interactions", json.dumps(CLICK).encode(), JSON, API_KEY),
    ("every field", "/interactions", json.dumps({**CLICK, "action_type": "rate", "value": 4.5, "session_id": "s1",
                                                 "context": {"page": "home"}, "event_id": "e-1",
                                                 "event_time": "2024-05-01T10:00:00+02:00",
                                                 "request_id": "r-1"}).encode(), JSON, API_KEY),
    ("charset", "/interactions", json.dumps(CLICK).encode(), "application/json; charset=utf-8", API_KEY),
    ("no content type", "/interactions", json.dumps(CLICK).encode(), None, API_KEY),
    ("text content type", "/interactions", json.dumps(CLICK).encode(), "text/plain", API_KEY),
    ("unknown action", "/interactions", json.dumps({**CLICK, "action_type": "stare"}).encode(), JSON, API_KEY),
    ("missing item", "/interactions", json.dumps({"user_id": "u1", "action_type": "click"}).encode(), JSON,
     API_KEY),
    ("malformed JSON", "/interactions", b'{"user_id": "u1",', JSON, API_KEY),
    ("a list", "/interactions", b"[1, 2]", JSON, API_KEY),
    ("empty body", "/interactions", b"", JSON, API_KEY),
    ("no key", "/interactions", json.dumps(CLICK).encode(), JSON, None),
    ("wrong key and a bad body", "/interactions", b"{}", JSON, "not-a-key"),
    ("rating", "/feedback", json.dumps({"user_id": "u1", "item_id": "i3", "kind": "rating", "value": 4}).encode(),
     JSON, API_KEY),
    ("rating without value", "/feedback", json.dumps({"user_id": "u1", "item_id": "i3", "kind": "rating"}).encode(),
     JSON, API_KEY),
    ("not interested", "/feedback", json.dumps({"user_id": "u2", "item_id": "i0", "kind": "not_interested",
                                                "event_id": "e-2"}).encode(), JSON, API_KEY),
]


@dataclass
class TwoApps:
    fast: str  # URL of the app with the lane
    slow: str  # ... without it
    seen: list[bool]  # what the lane returned for each request it was given
    buses: tuple[RecordingBus, RecordingBus]
    services: tuple[FakeService, FakeService]


@pytest.fixture(scope="module")
def two_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoApps]:
    data: Path = tmp_path_factory.mktemp("fast_lane")
    settings = api_settings(Settings.load().model_copy(update={"data_dir": data}), allow_as_of=True,
                            rate_limit_per_second=10_000.0, rate_limit_burst=10_000,
                            api_keys=[API_KEY, PLAYGROUND_KEY], playground_api_keys=[PLAYGROUND_KEY])
    seen: list[bool] = []
    original = api.FastLane.__call__

    async def recording(self: api.FastLane, scope: Any, path: str, body: bytes, send: Any) -> bool:
        answered = await original(self, scope, path, body, send)
        seen.append(answered)
        return answered

    buses, services = (RecordingBus(), RecordingBus()), (FakeService(), FakeService())
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        patch.setattr(api.FastLane, "__call__", recording)
        fast = api.create_app(settings, services[0], buses[0])
        slow = api.create_app(settings, services[1], buses[1])
        _lane_of(slow).enabled = False
        yield TwoApps(stack.enter_context(served(fast)), stack.enter_context(served(slow)), seen, buses, services)


def _lane_of(app: Any) -> api.FastLane:
    for middleware in app.user_middleware:
        if middleware.cls is api.Edge:
            return middleware.kwargs["fast"]
    raise AssertionError("no Edge middleware")


def _get(url: str, params: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {} if key is None else {"X-API-Key": key}
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.get("/recommendations", params=params, headers=headers)


def _post(url: str, path: str, body: bytes, content_type: str | None, key: str | None) -> httpx.Response:
    headers = {} if key is None else {"X-API-Key": key}
    if content_type is not None:
        headers["Content-Type"] = content_type
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.post(path, content=body, headers=headers)


def _comparable(answer: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = answer.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
        if "event_id" in body and str(body["event_id"]).count("-") == 4:  # generated (a UUID): the same shape
            body["event_id"] = "generated"
    return answer.status_code, body, {h: answer.headers[h] for h in READ_HEADERS if h in answer.headers}


def _published(bus: RecordingBus, stamped: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """The bus's events, generated ids (and times, unless the client `stamped` them) left out."""
    out = []
    for kind, key, payload in bus.events:
        payload = dict(payload)
        if str(payload["event_id"]).count("-") == 4:
            payload["event_id"] = "generated"
        if not stamped:
            payload.pop("event_time")
        out.append((kind, key, payload))
    return out


@pytest.mark.parametrize("name, params, key", CASES, ids=[case[0] for case in CASES])
def test_the_lane_answers_as_the_route_does(two_apps: TwoApps, name: str, params: dict[str, Any],
                                            key: str | None) -> None:
    assert _comparable(_get(two_apps.fast, params, key)) == _comparable(_get(two_apps.slow, params, key)), name


@pytest.mark.parametrize("name, path, body, content_type, key", EVENT_CASES, ids=[case[0] for case in EVENT_CASES])
def test_the_lane_takes_events_as_the_routes_do(two_apps: TwoApps, name: str, path: str, body: bytes,
                                                content_type: str | None, key: str | None) -> None:
    for bus in two_apps.buses:
        bus.events.clear()
    fast = _post(two_apps.fast, path, body, content_type, key)
    slow = _post(two_apps.slow, path, body, content_type, key)
    assert _comparable(fast) == _comparable(slow), name
    stamped = b"event_time" in body
    assert _published(two_apps.buses[0], stamped) == _published(two_apps.buses[1], stamped), name
    assert two_apps.services[0].excluded == two_apps.services[1].excluded


def test_valid_requests_take_the_lane_and_invalid_ones_the_route(two_apps: TwoApps) -> None:
    fast, seen = two_apps.fast, two_apps.seen
    seen.clear()
    assert _get(fast, {"user_id": "u1", "n": "3"}, API_KEY).status_code == 200
    assert _get(fast, {"user_id": "u1", "n": "0"}, API_KEY).status_code == 422
    assert _get(fast, {"user_id": "u1", "n": "3"}, "not-a-key").status_code == 401
    assert _get(fast, {"user_id": "u1", "n": ["3", "4"]}, API_KEY).status_code == 200  # repeated: the route
    assert _post(fast, "/interactions", json.dumps(CLICK).encode(), JSON, API_KEY).status_code == 202
    assert _post(fast, "/interactions", b"{", JSON, API_KEY).status_code == 422
    assert _post(fast, "/interactions", json.dumps(CLICK).encode(), "text/plain", API_KEY).status_code in (202, 422)
    assert seen == [True, False, True, False, True, False, False]


def test_a_refused_request_spends_one_token_either_way(tmp_path: Path) -> None:
    """A burst of 3: the lane and the route refuse the same request, whichever of them checked the key."""
    settings = api_settings(Settings.load().model_copy(update={"data_dir": tmp_path}),
                            rate_limit_per_second=0.01, rate_limit_burst=3)
    codes = []
    for lane in (True, False):
        app = api.create_app(settings, FakeService(), RecordingBus())
        _lane_of(app).enabled = lane
        with served(app) as url:
            codes.append([_get(url, params, API_KEY).status_code
                          for params in ({"user_id": "u1"}, {"user_id": "u1", "n": "0"}, {"user_id": "u2"},
                                         {"user_id": "u1"})])
    assert codes[0] == codes[1] == [200, 422, 200, 429]
