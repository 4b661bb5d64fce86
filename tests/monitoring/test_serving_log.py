"""The serving log end to end: every answer of GET /recommendations lands in the lake (through Kafka and the
`serving-log` consumer in `services`, the in-process log in `local`) with what was served, and a click that
sends the answer's request_id back is attributed to that impression."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bento_services.api.http import app_from_settings
from bento_services.pipeline.contracts import Degradation, RecommendationResponse, RecommendedItem
from bento_services.pipeline.pipeline import build_pipeline
from bento_services.serving_log import LakeSink, ServingLog, to_record
from monitoring.attribution import load
from recsys import serving_log
from recsys.settings import ExperimentVariant
from tests.bento_services.conftest import api_settings, client, live_settings, served
from tests.bento_services.pipeline_data import FakeRanker, build_world, with_features
from tests.streaming.helpers import members, wait_until

REDIS_DB = 13


def test_answers_are_logged_and_a_click_is_attributed_to_its_impression(
        profile: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = api_settings(live_settings(profile, tmp_path, request, "servlog", REDIS_DB), publish_timeout_ms=3000.0,
                            allow_as_of=True)
    settings = settings.model_copy(update={"monitoring": settings.monitoring.model_copy(
        update={"log_flush_seconds": 0.2})})
    world = build_world(settings, tmp_path)
    users = [world.warm_user, world.cold_user, "nobody-at-all", world.warm_user]
    consumers = ["serving-log", "lake-writer"] if profile == "services" else []
    with members(settings, consumers):
        with served(app_from_settings(settings)) as url, client(url) as http:
            answers = []
            for user in users:
                response = http.get("/recommendations", params={"user_id": user, "n": 5})
                assert response.status_code == 200, response.text
                assert response.headers["X-Request-Id"] == response.json()["request_id"]
                answers.append(response.json())
            replay = http.get("/recommendations", params={"user_id": world.warm_user, "n": 3,
                                                          "as_of": "2026-01-05T10:00:00"})
            assert replay.status_code == 200, replay.text
            clicked = answers[0]["items"][2]["item_id"]
            posted = http.post("/interactions", json={"user_id": world.warm_user, "item_id": clicked,
                                                      "action_type": "click", "request_id": answers[0]["request_id"]})
            assert posted.status_code == 202, posted.text
        # The app flushed its log on shutdown; in `services` the consumers move log and click into the lake.
        ids = [a["request_id"] for a in answers]
        assert len(set(ids)) == len(ids) and all(ids)
        wait_until(lambda: len(serving_log.read(settings.lake_path)) == len(ids) + 1, 30, "the serving log in the lake")
        wait_until(lambda: load(settings).events["request_id"].notna().any(), 30, "the click in the lake")
        served_ = load(settings)
    logged = serving_log.read(settings.lake_path).set_index("request_id").loc[ids]
    assert logged["user_id"].tolist() == users
    for (_, row), answer in zip(logged.iterrows(), answers):
        assert list(row["item_ids"]) == [i["item_id"] for i in answer["items"]]
        assert list(row["scores"]) == pytest.approx([i["score"] for i in answer["items"]])
        assert (row["variant"], row["model_version"], row["degradation"], bool(row["cached"])) == (
            answer["variant"], answer["model_version"], answer["degradation"], answer["cached"])
        assert row["latency_ms"] > 0 and row["candidates_version"] == "v-test"
    assert logged.loc[ids[1], "degradation"] == "cold_start"
    replayed = serving_log.read(settings.lake_path).set_index("request_id").loc[replay.json()["request_id"]]
    assert replayed["served_at"] == pd.Timestamp("2026-01-05T10:00:00", tz="UTC")  # a replay is logged at its time
    events = served_.events
    click = events[(events["item_id"] == clicked) & (events["user_id"] == world.warm_user)
                   & (events["event_time"] > pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=10))]
    assert click[["request_id", "rank", "variant"]].values.tolist() == [[ids[0], 3.0, answers[0]["variant"]]]


def test_sampled_requests_log_the_rankers_input_and_a_holdout_arm_is_shuffled(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    base = make_settings("local", tmp_path)
    world = build_world(base, tmp_path)
    settings = with_features(world, tmp_path)
    holdout = ExperimentVariant(name="holdout", buckets=(0, 100), experiment="shuffle-test", shuffle=True)
    sampled = settings.model_copy(update={"monitoring": settings.monitoring.model_copy(
        update={"feature_sample_rate": 1.0})})
    pipeline = build_pipeline(sampled, ranker=FakeRanker())
    from bento_services.pipeline.contracts import RecommendationRequest

    try:
        answer = pipeline.recommend(RecommendationRequest(world.warm_user, 10), use_precomputed=False)
        assert answer.degradation == Degradation.FULL and answer.features is not None
        features = answer.features
        assert features["user_id"][0] == world.warm_user and len(set(map(len, features.values()))) == 1
        record = to_record(answer)
        assert serving_log.to_table([record]).num_rows == 1 and "item_features__" in record["features"]
    finally:
        pipeline.close()
    shuffled = build_pipeline(sampled.model_copy(update={"serving": sampled.serving.model_copy(
        update={"experiments": [holdout]})}), ranker=FakeRanker())
    try:
        orders = [[i.item_id for i in shuffled.recommend(RecommendationRequest(world.warm_user, 10)).items]
                  for _ in range(4)]
    finally:
        shuffled.close()
    assert len({tuple(o) for o in orders}) > 1  # random order per request
    assert len({frozenset(o) for o in orders}) == 1  # of the same items


class _Failing:
    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def write(self, records: list[dict[str, Any]]) -> None:
        self.calls += 1
        self.release.wait(5)
        raise OSError("disk full")

    def close(self) -> None:
        return None


def _answer(k: int) -> RecommendationResponse:
    return RecommendationResponse(f"u{k}", [RecommendedItem("i1", 1, 1.0, "popularity", "popular")], "control",
                                  "popular", Degradation.POPULAR, request_id=f"r{k}", stage_ms={"total": 1.0})


def test_a_failing_or_full_log_never_blocks_a_request(tmp_path: Path) -> None:
    sink = _Failing()
    log = ServingLog(sink, flush_seconds=0.05, capacity=10)
    started = time.perf_counter()
    for k in range(100):  # the sink hangs, then fails: records past the buffer are dropped at once
        log.record(_answer(k))
    assert time.perf_counter() - started < 0.5
    sink.release.set()
    assert log.flush(10)
    log.close()
    assert sink.calls >= 1
    lake = ServingLog(LakeSink(_settings(tmp_path)), flush_seconds=0.05)
    for k in range(3):
        lake.record(_answer(k))
    lake.close()
    assert serving_log.read(_settings(tmp_path).lake_path)["request_id"].tolist() == ["r0", "r1", "r2"]


def _settings(tmp_path: Path) -> Any:
    from recsys.settings import Settings

    return Settings(data_dir=tmp_path / "data")


def test_records_survive_the_wire_format() -> None:
    from bento_services.serving_log import _json
    from recsys.streaming.serving_log import ServingLogWriter

    record = to_record(_answer(1))
    decoded = ServingLogWriter.decode(_json(record))
    assert decoded["_at"] == pd.Timestamp(record["served_at"], unit="ms", tz="UTC")
    assert serving_log.to_table([decoded]).to_pylist()[0]["item_ids"] == ["i1"]


def test_as_of_is_refused_unless_the_server_allows_replays(tmp_path: Path) -> None:
    from bento_services.api.http import create_app
    from tests.bento_services.conftest import FakeService, RecordingBus

    settings = api_settings(_settings(tmp_path))
    with served(create_app(settings, FakeService(), RecordingBus())) as url, client(url) as http:
        refused = http.get("/recommendations", params={"user_id": "u1", "as_of": "2026-01-05T10:00:00"})
        assert refused.status_code == 403 and "allow_as_of" in refused.json()["detail"]
        assert http.get("/recommendations", params={"user_id": "u1"}).status_code == 200
