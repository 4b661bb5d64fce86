"""The HTTP layer through a real client against uvicorn, over an in-test service and a recording bus.

Every bad input gets its 4xx with a message and publishes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bento_services.api.schemas import RecommendationsOut
from recsys.settings import Settings
from tests.bento_services.conftest import FakeApi, FakeService, RecordingBus, api_settings, client, served

GOOD_EVENT = {"user_id": "u1", "item_id": "i7", "action_type": "click"}


def test_recommendations_answer_with_items_and_headers(fake_api: FakeApi) -> None:
    answer = fake_api.http.get("/recommendations", params={"user_id": "u1", "n": 5, "device": "ios"})
    assert answer.status_code == 200
    body = RecommendationsOut.model_validate(answer.json())
    assert [item.rank for item in body.items] == [1, 2, 3, 4, 5]
    assert (body.variant, body.model_version, body.degradation.value, body.cached) == ("control", "fake-1", "full",
                                                                                        False)
    assert answer.headers["X-Experiment"] == "control"
    assert answer.headers["X-Model-Version"] == "fake-1"
    assert answer.headers["X-Degradation"] == "full"
    assert "stage_ms" not in answer.json()
    assert fake_api.service.requests[-1].context.device == "ios"


def test_default_n_is_50(fake_api: FakeApi) -> None:
    assert len(fake_api.http.get("/recommendations", params={"user_id": "u1"}).json()["items"]) == 50


@pytest.mark.parametrize("params, field", [
    ({"user_id": "u1", "n": 0}, "query.n"),
    ({"user_id": "u1", "n": 201}, "query.n"),
    ({"user_id": "u1", "n": "ten"}, "query.n"),
    ({"user_id": "u1", "n": "2.5"}, "query.n"),
    ({"n": 5}, "query.user_id"),
    ({"user_id": ""}, "query.user_id"),
    ({"user_id": "u" * 129}, "query.user_id"),
])
def test_recommendations_bad_query_is_422_naming_the_field(fake_api: FakeApi, params: dict[str, Any],
                                                           field: str) -> None:
    answer = fake_api.http.get("/recommendations", params=params)
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "invalid_request"
    assert [e["field"] for e in body["detail"]] == [field]
    assert body["detail"][0]["reason"]
    assert fake_api.service.requests == []


def test_n_max_is_allowed(fake_api: FakeApi) -> None:
    answer = fake_api.http.get("/recommendations", params={"user_id": "u1", "n": fake_api.settings.serving.max_n})
    assert answer.status_code == 200 and len(answer.json()["items"]) == 200


def test_a_not_found_error_of_the_service_is_404_with_message(fake_api: FakeApi) -> None:
    """The error mapping: the real pipeline answers unknown users (cold start, tests/.../test_users.py)."""
    answer = fake_api.http.get("/recommendations", params={"user_id": "nobody"})
    assert answer.status_code == 404
    assert answer.json()["error"] == "unknown_user"
    assert "nobody" in answer.json()["detail"]


def test_interaction_is_published_keyed_by_user(fake_api: FakeApi) -> None:
    answer = fake_api.http.post("/interactions", json={**GOOD_EVENT, "value": 2.0, "session_id": "s1",
                                                       "context": {"page": "home"}})
    assert answer.status_code == 202
    [(kind, key, payload)] = fake_api.bus.events
    assert (kind, key) == ("interaction", "u1")
    assert payload["event_id"] == answer.json()["event_id"]
    assert payload["kind"] == "interaction" and payload["action_type"] == "click"
    assert payload["context"] == {"page": "home"} and payload["value"] == 2.0
    assert abs(datetime.fromisoformat(payload["event_time"]) - datetime.now(UTC)) < timedelta(minutes=1)


def test_client_event_id_and_time_are_kept(fake_api: FakeApi) -> None:
    event = {**GOOD_EVENT, "event_id": "e-1", "event_time": "2024-03-01T12:00:00+01:00"}
    assert fake_api.http.post("/interactions", json=event).json() == {"event_id": "e-1"}
    assert fake_api.bus.events[0][2]["event_time"] == "2024-03-01T11:00:00.000Z"


FUTURE = (datetime.now(UTC) + timedelta(days=1)).isoformat()


@pytest.mark.parametrize("change, field", [
    ({"user_id": None}, "body.user_id"),
    ({"item_id": None}, "body.item_id"),
    ({"action_type": None}, "body.action_type"),
    ({"user_id": 17}, "body.user_id"),
    ({"user_id": ""}, "body.user_id"),
    ({"user_id": " u1"}, "body.user_id"),
    ({"action_type": "teleport"}, "body.action_type"),
    ({"value": "much"}, "body.value"),
    ({"event_time": "yesterday"}, "body.event_time"),
    ({"event_time": FUTURE}, "body.event_time"),
    ({"context": {"page": 3}}, "body.context.page"),
    ({"context": ["page"]}, "body.context"),
    ({"color": "red"}, "body.color"),
])
def test_invalid_interaction_is_422_and_publishes_nothing(fake_api: FakeApi, change: dict[str, Any],
                                                          field: str) -> None:
    event = {k: v for k, v in {**GOOD_EVENT, **change}.items() if v is not None}
    answer = fake_api.http.post("/interactions", json=event)
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["detail"]] == [field]
    assert fake_api.bus.events == []


def test_unknown_action_type_names_the_known_ones(fake_api: FakeApi) -> None:
    reason = fake_api.http.post("/interactions", json={**GOOD_EVENT, "action_type": "x"}).json()["detail"][0]
    assert "unknown action_type 'x'" in reason["reason"] and "purchase" in reason["reason"]


@pytest.mark.parametrize("body", [b'{"user_id": "u1", ', b"not json", b"[1, 2"])
def test_malformed_json_is_422_with_message(fake_api: FakeApi, body: bytes) -> None:
    answer = fake_api.http.post("/interactions", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["reason"].startswith("malformed JSON")
    assert fake_api.bus.events == []


@pytest.mark.parametrize("body", [b"", b"[]", b"null", b'"text"'])
def test_body_that_is_no_object_is_422(fake_api: FakeApi, body: bytes) -> None:
    answer = fake_api.http.post("/interactions", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert fake_api.bus.events == []


def test_oversize_body_is_413(fake_api: FakeApi) -> None:
    limit = fake_api.settings.serving.max_body_bytes
    event = {**GOOD_EVENT, "context": {f"k{k}": "x" * 200 for k in range(limit // 200 + 1)}}
    answer = fake_api.http.post("/interactions", json=event)
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"
    assert fake_api.bus.events == []


def test_oversize_chunked_body_is_413(fake_api: FakeApi) -> None:
    limit = fake_api.settings.serving.max_body_bytes

    def chunks() -> Any:
        yield b'{"user_id": "u1", "item_id": "i1", "action_type": "click", "reason": "'
        for _ in range(limit // 1000 + 1):
            yield b"x" * 1000
        yield b'"}'

    answer = fake_api.http.post("/feedback", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert fake_api.bus.events == []


@pytest.mark.parametrize("feedback", [
    {"kind": "rating", "value": 4.5},
    {"kind": "report", "reason": "offensive cover"},
])
def test_feedback_is_published(fake_api: FakeApi, feedback: dict[str, Any]) -> None:
    answer = fake_api.http.post("/feedback", json={"user_id": "u2", "item_id": "i3", **feedback})
    assert answer.status_code == 202
    [(kind, key, payload)] = fake_api.bus.events
    assert (kind, key, payload["feedback"], payload["event_id"]) == ("feedback", "u2", feedback["kind"],
                                                                     answer.json()["event_id"])


def test_not_interested_excludes_the_item_from_the_next_answer(fake_api: FakeApi) -> None:
    first = fake_api.http.get("/recommendations", params={"user_id": "u1", "n": 3}).json()["items"][0]["item_id"]
    answer = fake_api.http.post("/feedback", json={"user_id": "u1", "item_id": first, "kind": "not_interested"})
    assert answer.status_code == 202
    assert fake_api.bus.events[0][2]["feedback"] == "not_interested"
    items = fake_api.http.get("/recommendations", params={"user_id": "u1", "n": 3}).json()["items"]
    assert first not in [item["item_id"] for item in items]


@pytest.mark.parametrize("feedback, field", [
    ({"kind": "rating"}, "body"),
    ({"kind": "rating", "value": 0.0}, "body.value"),
    ({"kind": "rating", "value": 5.5}, "body.value"),
    ({"kind": "rating", "value": "NaN"}, "body.value"),
    ({"kind": "report", "value": 3.0}, "body"),
    ({"kind": "love"}, "body.kind"),
    ({}, "body.kind"),
])
def test_invalid_feedback_is_422_and_publishes_nothing(fake_api: FakeApi, feedback: dict[str, Any],
                                                       field: str) -> None:
    answer = fake_api.http.post("/feedback", json={"user_id": "u1", "item_id": "i1", **feedback})
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["detail"]] == [field]
    assert fake_api.bus.events == [] and fake_api.service.excluded == set()


def test_rating_without_value_says_so(fake_api: FakeApi) -> None:
    answer = fake_api.http.post("/feedback", json={"user_id": "u1", "item_id": "i1", "kind": "rating"})
    assert answer.json()["detail"][0]["reason"] == "value is required for kind=rating (0.5 to 5)"


@pytest.mark.parametrize("path, body", [
    ("/interactions", {**GOOD_EVENT, "user_id": "nobody"}),
    ("/feedback", {"user_id": "nobody", "item_id": "i1", "kind": "rating", "value": 3}),
])
def test_events_of_unknown_users_are_accepted_and_published(fake_api: FakeApi, path: str,
                                                            body: dict[str, Any]) -> None:
    """A new user's first event creates them (the `users` consumer); the directory refuses no one."""
    answer = fake_api.http.post(path, json=body)
    assert answer.status_code == 202, answer.text
    [(kind, key, payload)] = fake_api.bus.events
    assert (key, payload["user_id"], payload["event_id"]) == ("nobody", "nobody", answer.json()["event_id"])


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
@pytest.mark.parametrize("method, path, body", [
    ("GET", "/recommendations?user_id=u1", None),
    ("POST", "/interactions", GOOD_EVENT),
    ("POST", "/feedback", {"user_id": "u1", "item_id": "i1", "kind": "not_interested"}),
])
def test_missing_or_bad_api_key_is_401(fake_api: FakeApi, key: str | None, method: str, path: str,
                                       body: dict[str, Any] | None) -> None:
    with client(fake_api.base_url, key=None) as anonymous:
        headers = {} if key is None else {"X-API-Key": key}
        answer = anonymous.request(method, path, json=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized" and "X-API-Key" in answer.json()["detail"]
    assert fake_api.bus.events == [] and fake_api.service.requests == [] and fake_api.service.excluded == set()


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/openapi.json", "/docs"])
def test_open_endpoints_need_no_key(fake_api: FakeApi, path: str) -> None:
    with client(fake_api.base_url, key=None) as anonymous:
        assert anonymous.get(path).status_code == 200


def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    from bento_services.api.http import create_app

    settings = api_settings(Settings.load().model_copy(update={"data_dir": tmp_path}),
                            rate_limit_per_second=0.5, rate_limit_burst=3)
    bus = RecordingBus()
    with served(create_app(settings, FakeService(), bus)) as url, client(url) as http:
        codes = [http.post("/interactions", json=GOOD_EVENT).status_code for _ in range(4)]
        limited = http.get("/recommendations", params={"user_id": "u1"})
        with client(url, key=None) as anonymous:
            assert anonymous.get("/healthz").status_code == 200
    assert codes == [202, 202, 202, 429]
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 2
    assert len(bus.events) == 3


def test_readyz_reports_each_dependency(fake_api: FakeApi) -> None:
    answer = fake_api.http.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"ready": True, "checks": {"fake_model": True, "event_bus": True}, "consumers": None}
    fake_api.service.ready = False
    answer = fake_api.http.get("/readyz")
    assert answer.status_code == 503 and answer.json()["ready"] is False


def test_metrics_count_requests_by_endpoint_and_status(fake_api: FakeApi) -> None:
    fake_api.http.get("/recommendations", params={"user_id": "u1"})
    fake_api.http.get("/recommendations", params={"user_id": "u1", "n": 0})
    text = fake_api.http.get("/metrics").text
    assert 'recsys_requests_total{endpoint="/recommendations",status="200"}' in text
    assert 'recsys_requests_total{endpoint="/recommendations",status="422"}' in text
    assert 'recsys_request_seconds_bucket{endpoint="/recommendations"' in text


def test_openapi_documents_the_api(fake_api: FakeApi) -> None:
    spec = fake_api.http.get("/openapi.json").json()
    assert {"/recommendations", "/interactions", "/feedback", "/users", "/healthz", "/readyz"} <= set(spec["paths"])
    get = spec["paths"]["/recommendations"]["get"]
    n = next(p for p in get["parameters"] if p["name"] == "n")
    assert (n["schema"]["minimum"], n["schema"]["maximum"]) == (1, 200)
    assert {"401", "422", "429"} <= set(get["responses"]) and "404" not in get["responses"]  # cold start
    assert set(spec["paths"]["/interactions"]["post"]["responses"]) >= {"202", "413", "422", "503"}
    assert "404" not in spec["paths"]["/interactions"]["post"]["responses"]
    assert set(spec["paths"]["/users"]["post"]["responses"]) >= {"200", "201", "401", "422", "503"}
    action = spec["components"]["schemas"]["InteractionIn"]["properties"]["action_type"]
    assert "purchase" in action["enum"]
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]


def test_unknown_path_is_404_json(fake_api: FakeApi) -> None:
    answer = fake_api.http.get("/nope")
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"


def test_a_bug_is_a_json_500(fake_api: FakeApi) -> None:
    fake_api.service.broken = True
    with client(fake_api.base_url) as own:  # uvicorn closes the connection after an application error
        answer = own.get("/recommendations", params={"user_id": "u1"})
    assert answer.status_code == 500 and answer.json()["error"] == "internal_error"
    assert 'endpoint="/recommendations",status="500"' in fake_api.http.get("/metrics").text


def test_event_payload_is_json_serialisable(fake_api: FakeApi) -> None:
    answer = fake_api.http.post("/feedback", json={"user_id": "u1", "item_id": "i1", "kind": "rating", "value": 3})
    assert answer.status_code == 202
    payload = fake_api.bus.events[0][2]
    assert json.loads(json.dumps(payload)) == payload  # what Kafka carries is what the consumers read
    assert (payload["user_id"], payload["item_id"], payload["value"]) == ("u1", "i1", 3)


def test_many_clients_at_once(fake_api: FakeApi) -> None:
    import concurrent.futures

    def call(k: int) -> int:
        return fake_api.http.get("/recommendations", params={"user_id": "u1", "n": k % 20 + 1}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(call, range(40))) == {200}
