"""The real-time loop through the HTTP API: a click changes the very next answer, in both profiles.

`local`: the in-process bus runs the consumers inside `POST /interactions`. `services`: the API publishes
to Kafka and the session aggregator and store writer consume it as group members (`recsys consume` runs
the same `KafkaRunner`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bento_services.api.http import app_from_settings
from bento_services.pipeline.batch import precompute
from bento_services.pipeline.pipeline import build_pipeline
from recsys.models.neighbours import ItemNeighbours
from recsys.streaming.topics import ensure_topics
from tests.bento_services.conftest import api_settings, client, live_settings, served
from tests.bento_services.pipeline_data import World, build_world
from tests.streaming.helpers import members, wait_until

REDIS_DB = 13


@dataclass
class Loop:
    http: httpx.Client
    world: World
    neighbours: ItemNeighbours


@pytest.fixture
def loop(profile: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Loop]:
    settings = live_settings(profile, tmp_path, request, "loop", REDIS_DB)
    if profile == "services":
        cassandra = settings.cassandra.model_copy(update={"keyspace": f"loop_{uuid.uuid4().hex[:8]}"})
        settings = settings.model_copy(update={"cassandra": cassandra})
    # Budgets a busy test machine does not run past: a lookup past its budget leaves the session out by design,
    # and these tests are about the loop, not about timeouts.
    settings = api_settings(settings, publish_timeout_ms=2000.0, stage_timeout_ms={
        stage: 5000.0 for stage in ("lookup", "precomputed", "user_state", "candidates", "features", "ranking")})
    if profile == "services":  # the session logs of an earlier test's users (same ids) must not leak in
        from recsys.stores.redis_client import fail_fast_client

        fail_fast_client(settings.redis, 5.0).flushdb()
    world = build_world(settings, tmp_path)
    neighbours = ItemNeighbours.build(world.events, neighbours=30)
    neighbours.save(world.folder / "item_neighbours")
    pipeline = build_pipeline(settings, candidates_dir=world.folder)
    precompute(pipeline, [world.warm_user], k=20)  # a user whose list is precomputed (layer 1)
    pipeline.close()
    with ExitStack() as stack:
        if profile == "services":
            running = stack.enter_context(members(settings, ["sessions", "store-writer"]))
            ensure_topics(settings)
            wait_until(lambda: all(m.runner.assignment() for m in running), 60, "the consumers joined their groups")
        url = stack.enter_context(served(app_from_settings(settings)))
        yield Loop(stack.enter_context(client(url)), world, neighbours)


def answer(loop: Loop, user: str) -> dict[str, object]:
    got = loop.http.get("/recommendations", params={"user_id": user, "n": 10})
    assert got.status_code == 200, got.text
    return dict(got.json())


def ids(body: dict[str, object]) -> list[str]:
    return [str(item["item_id"]) for item in body["items"]]  # type: ignore[attr-defined, index]


def test_a_click_changes_the_next_answer_within_a_second(loop: Loop) -> None:
    user = loop.world.warm_user
    before = answer(loop, user)
    assert before["cached"] is True  # precomputed: the live session must outrank layer 1
    seen = set(loop.world.events.loc[loop.world.events["user_id"] == user, "item_id"])
    clicked = next(i for i in loop.neighbours.item_ids if i not in seen and i not in ids(before))
    sent = time.monotonic()
    posted = loop.http.post("/interactions", json={"user_id": user, "item_id": clicked, "action_type": "click",
                                                   "event_time": datetime.now(UTC).isoformat()})
    assert posted.status_code == 202, posted.text
    while True:
        after = answer(loop, user)
        if after["items"][0]["source"] == "session" or time.monotonic() - sent > 1.0:  # type: ignore[index]
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - sent
    items = after["items"]
    assert elapsed <= 1.0, f"the click did not show within {elapsed:.2f} s: {after}"
    assert items[0]["source"] == "session" and items[0]["explanation"] == "session"  # type: ignore[index]
    near = {i for i, _ in loop.neighbours.similar([clicked], 10, {clicked})}
    assert items[0]["item_id"] in near  # type: ignore[index]
    assert clicked not in ids(after)  # what the session consumed is not proposed again
    consumers = loop.http.get("/readyz").json()["consumers"]
    if loop.world.settings.profile == "services":  # the groups' lag, reported beside the checks
        assert consumers["threshold"] == loop.world.settings.streaming.lag_threshold and "lag" in consumers
    else:
        assert consumers is None  # the consumers run inside POST /interactions


def test_not_interested_sinks_the_items_near_it(loop: Loop) -> None:
    user = loop.world.warm_user
    before = ids(answer(loop, user))
    dropped = before[0]
    posted = loop.http.post("/feedback", json={"user_id": user, "item_id": dropped, "kind": "not_interested"})
    assert posted.status_code == 202, posted.text
    near = {i for i, _ in loop.neighbours.similar([dropped], 20, {dropped})}
    deadline = time.monotonic() + 1.0
    while True:
        after = ids(answer(loop, user))
        kept = [i for i in after if i in near]
        # the dismissed item's near neighbours that stay in the list come after every other item
        sunk = not kept or after.index(kept[0]) == len(after) - len(kept)
        if sunk or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert dropped not in after
    assert sunk, (after, near)
    assert any(i in near for i in before[1:]), "the check is empty: no near neighbour was in the list"
