"""GET /recommendations' fast lane (`http.FastLane`) answers exactly what the FastAPI route answers.

Each request below goes to two apps over the same fake service: one as served, one with the lane switched off
(every request through FastAPI's routing and dependencies). Status, body (the request id aside), the headers a
client reads, and the rate limit's token count must be the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
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


@pytest.fixture(scope="module")
def two_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, list[bool]]]:
    """(URL with the lane, URL without it, what the lane returned for each request it saw)."""
    data: Path = tmp_path_factory.mktemp("fast_lane")
    settings = api_settings(Settings.load().model_copy(update={"data_dir": data}), allow_as_of=True,
                            rate_limit_per_second=10_000.0, rate_limit_burst=10_000,
                            api_keys=[API_KEY, PLAYGROUND_KEY], playground_api_keys=[PLAYGROUND_KEY])
    seen: list[bool] = []
    original = api.FastLane.__call__

    async def recording(self: api.FastLane, scope: Any, send: Any) -> bool:
        if not self.enabled:
            return False
        answered = await original(self, scope, send)
        seen.append(answered)
        return answered

    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        patch.setattr(api.FastLane, "__call__", recording)
        fast = api.create_app(settings, FakeService(), RecordingBus())
        slow = api.create_app(settings, FakeService(), RecordingBus())
        _lane_of(slow).enabled = False
        yield stack.enter_context(served(fast)), stack.enter_context(served(slow)), seen


def _lane_of(app: Any) -> api.FastLane:
    for middleware in app.user_middleware:
        if middleware.cls is api.Edge:
            return middleware.kwargs["fast"]
    raise AssertionError("no Edge middleware")


def _get(url: str, params: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {} if key is None else {"X-API-Key": key}
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.get("/recommendations", params=params, headers=headers)


def _comparable(answer: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = answer.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
    return answer.status_code, body, {h: answer.headers[h] for h in READ_HEADERS if h in answer.headers}


@pytest.mark.parametrize("name, params, key", CASES, ids=[case[0] for case in CASES])
def test_the_lane_answers_as_the_route_does(two_apps: tuple[str, str, list[bool]], name: str,
                                            params: dict[str, Any], key: str | None) -> None:
    fast, slow, _ = two_apps
    assert _comparable(_get(fast, params, key)) == _comparable(_get(slow, params, key)), name


def test_valid_requests_take_the_lane_and_invalid_ones_the_route(two_apps: tuple[str, str, list[bool]]) -> None:
    fast, _, seen = two_apps
    seen.clear()
    assert _get(fast, {"user_id": "u1", "n": "3"}, API_KEY).status_code == 200
    assert _get(fast, {"user_id": "u1", "n": "0"}, API_KEY).status_code == 422
    assert _get(fast, {"user_id": "u1", "n": "3"}, "not-a-key").status_code == 401
    assert _get(fast, {"user_id": "u1", "n": ["3", "4"]}, API_KEY).status_code == 200  # repeated: the route
    assert seen == [True, False, True, False]


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
