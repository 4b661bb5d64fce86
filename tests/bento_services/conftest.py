"""Serving fixtures: an app served by uvicorn on a free loopback port, an in-test service and a recording bus.

Fixtures here are shared by the serving tests; add new ones, don't change existing ones.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from bento_services.pipeline.contracts import (
    Degradation,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
)
from recsys.errors import UnknownUserError
from recsys.settings import Settings
from tests.conftest import make_settings

API_KEY = "test-key"


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Run `app` with uvicorn on 127.0.0.1 in a background thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def client(base_url: str, key: str | None = API_KEY) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"X-API-Key": key} if key else {}, timeout=30)


def live_settings(profile: str, tmp_path: Path, request: pytest.FixtureRequest, name: str, redis_db: int
                  ) -> Settings:
    """Settings for a test of the whole API: in `services`, Kafka is checked, and the test gets a private
    PostgreSQL database, its own Redis database, and a topic, dead-letter topic and consumer groups of its
    own (`name` + a random tag; 4 partitions, short lingering), serving-log topic included."""
    settings = make_settings(profile, tmp_path)
    if profile != "services":
        return settings
    request.getfixturevalue("kafka_up")
    database = request.getfixturevalue("private_database")
    tag = f"test-{name}-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(update={
        "postgres": settings.postgres.model_copy(update={"database": database}),
        "redis": settings.redis.model_copy(update={"db": redis_db}),
        "kafka": settings.kafka.model_copy(update={"topic": tag}),
        "streaming": settings.streaming.model_copy(update={
            "dlq_topic": f"{tag}.dlq", "group_prefix": f"{tag}-", "partitions": 4, "batch_linger_ms": 20,
            "backoff_max_seconds": 1.0}),
        "monitoring": settings.monitoring.model_copy(update={"serving_log_topic": f"{tag}.served"}),
    })


def api_settings(base: Settings, **serving: Any) -> Settings:
    """`base` with the test key, fast publish retries and any other serving overrides."""
    updates: dict[str, Any] = {"api_keys": [API_KEY], "publish_retries": 2, "publish_timeout_ms": 300.0, **serving}
    return base.model_copy(update={"serving": base.serving.model_validate({**base.serving.model_dump(), **updates})})


@dataclass
class FakeService:
    """A RecommendationService over a fixed item list, for checks of the HTTP layer alone."""

    users: set[str] = field(default_factory=lambda: {"u1", "u2"})
    items: list[str] = field(default_factory=lambda: [f"i{k}" for k in range(300)])
    excluded: set[tuple[str, str]] = field(default_factory=set)
    ready: bool = True
    broken: bool = False
    requests: list[RecommendationRequest] = field(default_factory=list)

    def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        if self.broken:
            raise RuntimeError("a bug in the service")
        self._known(request.user_id)
        self.requests.append(request)
        kept = [i for i in self.items if (request.user_id, i) not in self.excluded][: request.n]
        return RecommendationResponse(
            user_id=request.user_id, variant="control", model_version="fake-1", degradation=Degradation.FULL,
            items=[RecommendedItem(i, r, 1.0 / r, "popularity", "popular_in_category")
                   for r, i in enumerate(kept, start=1)],
        )

    def not_interested(self, user_id: str, item_id: str) -> None:
        self._known(user_id)
        self.excluded.add((user_id, item_id))

    def readiness(self) -> dict[str, bool]:
        return {"fake_model": self.ready}

    def close(self) -> None:
        pass

    def _known(self, user_id: str) -> None:
        if user_id not in self.users:
            raise UnknownUserError(user_id)


@dataclass
class FakeUsers:
    """A UserDirectory over a fixed set of ids."""

    users: set[str]

    def check(self, user_id: str) -> None:
        if user_id not in self.users:
            raise UnknownUserError(user_id)

    def close(self) -> None:
        pass


@dataclass
class RecordingBus:
    """An EventBus that keeps what it was given."""

    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        self.events.append((kind, key, payload))

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


@dataclass
class FakeApi:
    http: httpx.Client
    base_url: str
    service: FakeService
    bus: RecordingBus
    settings: Settings


@pytest.fixture(scope="module")
def _fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApi]:
    from bento_services.api.http import create_app

    data = tmp_path_factory.mktemp("fake_api")
    settings = api_settings(Settings.load().model_copy(update={"data_dir": data}),
                            rate_limit_per_second=10_000.0, rate_limit_burst=10_000)
    service, bus = FakeService(), RecordingBus()
    with served(create_app(settings, service, bus, users=FakeUsers(service.users))) as url, client(url) as http:
        yield FakeApi(http, url, service, bus, settings)


@pytest.fixture
def fake_api(_fake_server: FakeApi) -> FakeApi:
    """The app over FakeService and RecordingBus, served by uvicorn (one per module, state reset per test)."""
    fresh = FakeService(users=_fake_server.service.users)
    vars(_fake_server.service).update(vars(fresh))
    _fake_server.bus.events.clear()
    return _fake_server


def with_topic(settings: Settings, topic: str) -> Settings:
    """`settings` publishing to its own Kafka topic (created on first use), so tests don't see each other."""
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic": topic})})


def read_topic(settings: Settings, expected: int, timeout_s: float = 15.0) -> list[tuple[bytes, dict[str, Any]]]:
    """(key, JSON value) of every message on the settings' topic, waiting for at least `expected` of them."""
    import json

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.kafka.topic, bootstrap_servers=settings.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=1000)
    messages: list[tuple[bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            messages.extend((m.key, json.loads(m.value)) for m in consumer)
            if len(messages) >= expected:
                # One more short poll so that an unexpected extra message would show too.
                messages.extend((m.key, json.loads(m.value)) for m in consumer)
                break
    finally:
        consumer.close()
    return messages


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_database(servers: None) -> Iterator[str]:
    """A PostgreSQL database of this test's own on the shared server (no other test truncates it)."""
    import uuid

    import psycopg

    name = f"api_{uuid.uuid4().hex[:8]}"
    conninfo = Settings.load().postgres.conninfo()
    with psycopg.connect(conninfo, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(conninfo, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
