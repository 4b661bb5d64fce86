"""The API end to end as hosts build it (`app_from_settings`: real pipeline, profile's bus, catalog users).

A small synthetic world (tests/bento_services/pipeline_data.py) in the profile's stores and a candidate
artifact; no ranker, so full answers come from candidate scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bento_services.api.http import app_from_settings
from tests.bento_services.conftest import api_settings, client, live_settings, read_topic, served
from tests.bento_services.pipeline_data import World, build_world

REDIS_DB = 12  # the API tests' own Redis database on the shared server


@dataclass
class Live:
    http: httpx.Client
    world: World


@pytest.fixture
def live(profile: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Live]:
    settings = live_settings(profile, tmp_path, request, "live", REDIS_DB)
    settings = api_settings(settings, publish_timeout_ms=2000.0)
    world = build_world(settings, tmp_path)
    with served(app_from_settings(settings)) as url, client(url) as http:
        yield Live(http, world)


def top(live: Live, user: str, n: int = 10) -> list[str]:
    answer = live.http.get("/recommendations", params={"user_id": user, "n": n})
    assert answer.status_code == 200, answer.text
    return [item["item_id"] for item in answer.json()["items"]]


def test_recommendations_over_the_real_pipeline(live: Live) -> None:
    answer = live.http.get("/recommendations", params={"user_id": live.world.warm_user, "n": 10})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [item["rank"] for item in body["items"]] == list(range(1, 11))
    assert all(item["source"] and item["explanation"] for item in body["items"])
    assert (answer.headers["X-Experiment"], answer.headers["X-Model-Version"], answer.headers["X-Degradation"]) \
        == (body["variant"], body["model_version"], body["degradation"])
    assert body["degradation"] == "candidate_scores"  # no ranker in this world
    cold = live.http.get("/recommendations", params={"user_id": live.world.cold_user, "n": 5})
    assert cold.status_code == 200 and len(cold.json()["items"]) == 5
    unknown = live.http.get("/recommendations", params={"user_id": "nobody-at-all"})
    assert unknown.status_code == 200 and unknown.json()["items"]  # never 404: cold start (test_users.py)
    assert live.http.get("/recommendations", params={"user_id": live.world.warm_user, "n": 0}).status_code == 422
    for path, body in (("/interactions", {"user_id": "nobody-at-all", "item_id": "i1", "action_type": "click"}),
                       ("/feedback", {"user_id": "nobody-at-all", "item_id": "i1", "kind": "not_interested"})):
        accepted = live.http.post(path, json=body)
        assert accepted.status_code == 202, accepted.text  # a new user's first events create them
    ready = live.http.get("/readyz").json()
    assert ready["checks"]["event_bus"] and ready["checks"]["catalog"] and ready["checks"]["candidates"]


def test_not_interested_excludes_the_item_from_the_next_answer(live: Live) -> None:
    user = live.world.warm_user
    first = top(live, user)[0]
    answer = live.http.post("/feedback", json={"user_id": user, "item_id": first, "kind": "not_interested"})
    assert answer.status_code == 202, answer.text
    after = top(live, user)
    assert first not in after and len(after) == 10
    settings = live.world.settings
    if settings.profile == "services":
        [(key, event)] = read_topic(settings, expected=1)
        assert (key, event["feedback"], event["item_id"]) == (user.encode(), "not_interested", first)


def test_interactions_are_accepted_for_the_real_pipeline(live: Live) -> None:
    user = live.world.warm_user
    sent = live.http.post("/interactions", json={"user_id": user, "item_id": top(live, user)[0],
                                                 "action_type": "purchase"})
    assert sent.status_code == 202, sent.text
    settings = live.world.settings
    if settings.profile == "services":
        [(key, event)] = read_topic(settings, expected=1)
        assert (key, event["event_id"]) == (user.encode(), sent.json()["event_id"])
    else:
        from recsys.backends import open_interactions

        with open_interactions(settings) as store:
            assert sent.json()["event_id"] in set(store.user_events(user)["event_id"])
