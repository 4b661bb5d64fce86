"""POST /interactions and /feedback through HTTP onto the profile's real bus: the embedded store in `local`,
Kafka in `services`. Bad requests leave nothing behind; an unreachable Kafka answers 503 with Retry-After."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bento_services.api.http import create_app
from recsys.backends import open_bus, open_interactions
from recsys.settings import Settings
from tests.bento_services.conftest import FakeService, api_settings, client, closed_port, read_topic, served, with_topic


@dataclass
class Api:
    http: httpx.Client
    settings: Settings

    def delivered(self, expected: int) -> list[tuple[str, str, str]]:
        """(user_id, event_id, action or feedback kind) of everything the bus delivered."""
        if self.settings.profile == "services":
            return [(key.decode(), v["event_id"], v.get("action_type") or v["feedback"])
                    for key, v in read_topic(self.settings, expected)]
        with open_interactions(self.settings) as store:
            store.migrate()
            rows = store.user_events("u1")
        return [(r.user_id, r.event_id, r.action_type) for r in rows.itertuples()]


@pytest.fixture
def api(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Api]:
    if settings.profile == "services":
        request.getfixturevalue("kafka_up")
        settings = with_topic(settings, f"test-api-{uuid.uuid4().hex[:8]}")
    settings = api_settings(settings, publish_timeout_ms=2000.0)
    with served(create_app(settings, FakeService(), open_bus(settings), close_on_shutdown=True)) as url:
        with client(url) as http:
            yield Api(http, settings)


BAD_REQUESTS: list[tuple[str, dict[str, Any] | bytes, int]] = [
    ("/interactions", {"user_id": "u1", "item_id": "i1"}, 422),
    ("/interactions", {"user_id": "u1", "item_id": "i1", "action_type": "teleport"}, 422),
    ("/interactions", {"user_id": 1, "item_id": "i1", "action_type": "click"}, 422),
    ("/interactions", b'{"user_id": "u1", "item_id": ', 422),
    ("/interactions", {"user_id": "u1", "item_id": "i1", "action_type": "click", "context": {"x": "y" * 20_000}}, 413),
    ("/feedback", {"user_id": "u1", "item_id": "i1", "kind": "rating"}, 422),
]


def test_events_reach_the_bus_and_bad_requests_leave_nothing(api: Api) -> None:
    for path, body, status in BAD_REQUESTS:
        sent = api.http.post(path, content=body, headers={"Content-Type": "application/json"}) \
            if isinstance(body, bytes) else api.http.post(path, json=body)
        assert sent.status_code == status, (path, body, sent.text)
    with client(str(api.http.base_url), key="bad") as intruder:
        assert intruder.post("/interactions", json={"user_id": "u1", "item_id": "i1",
                                                    "action_type": "click"}).status_code == 401
    click = api.http.post("/interactions", json={"user_id": "u1", "item_id": "i1", "action_type": "click",
                                                 "event_time": "2024-05-01T10:00:00Z"})
    rating = api.http.post("/feedback", json={"user_id": "u1", "item_id": "i2", "kind": "rating", "value": 4.0,
                                              "event_time": "2024-05-01T11:00:00Z"})
    assert (click.status_code, rating.status_code) == (202, 202)
    expected = {("u1", click.json()["event_id"], "click"),
                ("u1", rating.json()["event_id"], "rating" if api.settings.profile == "services" else "rate")}
    assert set(api.delivered(expected=2)) == expected


def test_unreachable_kafka_is_503_with_retry_after_in_bounded_time(tmp_path: Path) -> None:
    base = Settings.load().model_copy(update={"profile": "services", "data_dir": tmp_path})
    settings = api_settings(base.model_copy(update={"kafka": base.kafka.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{closed_port()}"})}), publish_retries=2, publish_timeout_ms=300.0)
    with served(create_app(settings, FakeService(), open_bus(settings), close_on_shutdown=True)) as url, \
            client(url) as http:
        started = time.monotonic()
        answer = http.post("/interactions", json={"user_id": "u1", "item_id": "i1", "action_type": "click"})
        elapsed = time.monotonic() - started
        ready = http.get("/readyz")
        healthy = http.get("/healthz")
    assert answer.status_code == 503 and elapsed < 10.0  # two 300 ms attempts, not kafka-python's 60 s
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["error"] == "event_bus_unavailable" and "retry" in answer.json()["detail"]
    assert ready.status_code == 503 and ready.json()["checks"]["event_bus"] is False
    assert healthy.status_code == 200
