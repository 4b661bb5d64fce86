"""Admission control through HTTP: a burst past the limit and the queue gets fast 503s with Retry-After and a
message, counted in /metrics; every admitted request answers 200; right after the burst, requests are
admitted again. The service blocks on an event, so who runs, who waits and who is refused is decided by
the limits, not by timing."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bento_services.api.http import create_app
from bento_services.pipeline.contracts import RecommendationRequest, RecommendationResponse
from recsys.settings import Settings
from tests.bento_services.conftest import FakeService, RecordingBus, api_settings, client, served

LIMIT, QUEUE = 2, 2
GENEROUS_S = 20.0


class BlockingService(FakeService):
    """FakeService whose answers wait for `release`; `inside` counts the requests in `recommend`."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.inside = 0
        self.lock = threading.Lock()

    def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        with self.lock:
            self.inside += 1
        self.release.wait(GENEROUS_S)
        return super().recommend(request)


class BlockingBus(RecordingBus):
    """RecordingBus whose publishing waits for `release`; `inside` counts the events being published."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.inside = 0

    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        self.inside += 1
        self.release.wait(GENEROUS_S)
        super().publish(kind, key, payload)


@dataclass
class Api:
    url: str
    service: BlockingService
    bus: BlockingBus


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = api_settings(Settings.load().model_copy(update={"data_dir": tmp_path}),
                            rate_limit_per_second=10_000.0, rate_limit_burst=10_000, admission_limit=LIMIT,
                            admission_queue=QUEUE, admission_queue_ms=GENEROUS_S * 1000, events_admission_limit=1,
                            events_admission_queue=0)
    service, bus = BlockingService(), BlockingBus()
    with served(create_app(settings, service, bus)) as url:
        yield Api(url, service, bus)
        service.release.set()
        bus.release.set()


def admissions(http: httpx.Client, kind: str, result: str) -> float:
    text = http.get("/metrics").text
    found = re.search(rf'^recsys_admissions_total{{kind="{kind}",result="{result}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def until(condition: Any, seconds: float = GENEROUS_S) -> None:
    done = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not met in time")


def get(url: str) -> httpx.Response:
    with client(url) as http:
        return http.get("/recommendations", params={"user_id": "u1", "n": 5})


def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    with client(url) as http:
        return http.post(path, json=body)


def test_a_burst_past_limit_and_queue_gets_fast_503s_and_the_admitted_answer(api: Api) -> None:
    with client(api.url) as http, ThreadPoolExecutor(max_workers=12) as pool:
        refused_before = admissions(http, "recommendations", "queue_full")
        running = [pool.submit(get, api.url) for _ in range(LIMIT)]
        until(lambda: api.service.inside == LIMIT)
        burst = [pool.submit(get, api.url) for _ in range(8)]
        # While the service still holds every slot, all but QUEUE of the burst come back: refused at once.
        until(lambda: sum(f.done() for f in burst) == 8 - QUEUE)
        refused: list[Future[httpx.Response]] = [f for f in burst if f.done()]
        assert len(refused) == 8 - QUEUE and api.service.inside == LIMIT
        for future in refused:
            answer = future.result()
            assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
            assert answer.json()["error"] == "overloaded" and "overloaded" in answer.json()["detail"]
        assert admissions(http, "recommendations", "queue_full") == refused_before + 8 - QUEUE
        api.service.release.set()
        admitted = running + [f for f in burst if f not in refused]
        wait(admitted, timeout=GENEROUS_S)
        assert [f.result().status_code for f in admitted] == [200] * (LIMIT + QUEUE)
        released = time.monotonic()
        # The pipeline's budget counts from arrival: the queued requests carry the time they came in.
        assert all(r.received_at is not None and r.received_at < released for r in api.service.requests)
        after = http.get("/recommendations", params={"user_id": "u2", "n": 5})
        assert after.status_code == 200 and len(after.json()["items"]) == 5  # admitted again at once
        assert 'recsys_admission_wait_seconds_count{kind="recommendations"}' in http.get("/metrics").text


def test_events_have_their_own_limit(api: Api) -> None:
    body = {"user_id": "u1", "item_id": "i1", "action_type": "click"}
    with client(api.url) as http, ThreadPoolExecutor(max_workers=2) as pool:
        publishing = pool.submit(post, api.url, "/interactions", body)
        until(lambda: api.bus.inside == 1)
        refused = http.post("/feedback", json={"user_id": "u1", "item_id": "i1", "kind": "rating", "value": 4})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        api.service.release.set()
        assert http.get("/recommendations", params={"user_id": "u1", "n": 1}).status_code == 200  # its own limit
        api.bus.release.set()
        assert publishing.result(timeout=GENEROUS_S).status_code == 202
        assert len(api.bus.events) == 1  # the refused event was not published
