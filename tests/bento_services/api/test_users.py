"""New users end to end through the HTTP API, on both profiles (`app_from_settings`: the real pipeline, the
profile's bus, the catalog directory; in `services` the streaming consumers run on the test's own topic).

Unknown users get the cold-start rung (never 404); `POST /users` registers the onboarding answers, visible in
the very next answer; the first `POST /interactions` of an unknown user is accepted, creates the user through
the consumers, and from that click on the session shapes their list.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bento_services.api.directory import CatalogUsers
from bento_services.api.http import app_from_settings, create_app
from recsys.backends import open_catalog, open_consumer, open_interactions
from recsys.models.neighbours import ItemNeighbours
from recsys.settings import Settings
from recsys.streaming.decode import validate
from tests.bento_services.conftest import (
    FakeService,
    RecordingBus,
    api_settings,
    client,
    closed_port,
    live_settings,
    served,
)
from tests.bento_services.pipeline_data import World, build_world

REDIS_DB = 12  # the API tests' own Redis database on the shared server (user ids here are unique per test)


@dataclass
class Live:
    http: httpx.Client
    world: World
    settings: Settings
    neighbours: ItemNeighbours

    def top(self, user: str, n: int = 10) -> dict[str, Any]:
        answer = self.http.get("/recommendations", params={"user_id": user, "n": n})
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Degradation"] == answer.json()["degradation"]
        return dict(answer.json())

    def category(self, item: str) -> str:
        return self.categories[item]

    @property
    def categories(self) -> dict[str, str]:
        return dict(zip(self.world.items["item_id"].astype(str), self.world.items["category"].astype(str)))

    def stored_user(self, user: str) -> dict[str, Any] | None:
        with open_catalog(self.settings) as catalog:
            return catalog.get_user(user)


#: The consumers these tests watch the work of: the interaction store, the live session, the catalog row.
WATCHED = ("store-writer", "sessions", "users")


class Consumers:
    """The WATCHED streaming consumers, each on a thread of its own, reading the test's topic."""

    def __init__(self, settings: Settings) -> None:
        from recsys.streaming.kafka_runner import KafkaRunner
        from recsys.streaming.topics import ensure_topics

        ensure_topics(settings)  # once, before the runners (each ensures them too; at once they race)
        self.stop = threading.Event()
        self.runners = [KafkaRunner(open_consumer(settings, name), settings, self.stop) for name in WATCHED]
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(runner.run,), daemon=True) for runner in self.runners]
        for thread in self.threads:
            thread.start()

    def _run(self, run: Callable[[], None]) -> None:
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - reported by close()
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not self.errors, self.errors


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """In `local` the in-process bus has run the consumers before POST returns: true at once."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.2)


@pytest.fixture
def live(profile: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Live]:
    settings = live_settings(profile, tmp_path, request, "users", REDIS_DB)
    # Budgets no busy test machine runs past: these tests are about which rung answers, not about timeouts.
    settings = api_settings(settings, publish_timeout_ms=2000.0, stage_timeout_ms={
        stage: 5000.0 for stage in ("lookup", "precomputed", "user_state", "candidates", "features", "ranking")})
    world = build_world(settings, tmp_path)
    # Item neighbours in the artifact, so that a live session puts its picks on top.
    neighbours = ItemNeighbours.build(world.events, neighbours=50)
    neighbours.save(world.folder / "item_neighbours")
    consumers = Consumers(settings) if profile == "services" else None
    try:
        with served(app_from_settings(settings)) as url, client(url) as http:
            yield Live(http, world, settings, neighbours)
    finally:
        if consumers is not None:
            consumers.close()


def new_user() -> str:
    return f"new-{uuid.uuid4().hex[:12]}"


def test_an_unknown_user_gets_the_cold_start_rung_not_404(live: Live) -> None:
    user = new_user()
    body = live.top(user, n=10)
    assert body["degradation"] == "cold_start" and body["model_version"] == "popular" and not body["cached"]
    assert [i["rank"] for i in body["items"]] == list(range(1, 11))
    assert {(i["source"], i["explanation"]) for i in body["items"]} == {("popularity", "popular")}
    counts = live.world.events["item_id"].astype(str).value_counts()
    assert [i["score"] for i in body["items"]] == [float(c) for c in counts.iloc[:10]], "the most popular first"
    assert all(counts[i["item_id"]] == i["score"] for i in body["items"])
    assert live.stored_user(user) is None, "asking writes nothing"


def test_post_users_creates_then_updates_and_returns_the_stored_profile(live: Live) -> None:
    user = new_user()
    created = live.http.post("/users", json={"user_id": user, "preferred_categories": ["Drama", "Comedy", "Drama"],
                                             "language": "pt-br", "country": "br"})
    assert created.status_code == 201, created.text
    profile = created.json()
    assert (profile["user_id"], profile["preferred_categories"], profile["language"], profile["country"]) == \
        (user, ["Drama", "Comedy"], "pt-BR", "BR")
    assert profile["onboarding_completed"] is True and profile["created_at"]
    updated = live.http.post("/users", json={"user_id": user, "language": "fr"})
    assert updated.status_code == 200, updated.text
    assert updated.json() == {**profile, "language": "fr"}, "fields left out keep their stored values"
    cleared = live.http.post("/users", json={"user_id": user, "preferred_categories": []})
    assert cleared.status_code == 200 and cleared.json()["preferred_categories"] == []
    stored = live.stored_user(user)
    assert stored is not None and stored["language"] == "fr" and stored["country"] == "BR"
    assert live.stored_user(user[:-1]) is None


BAD_PROFILES: list[tuple[dict[str, Any], str]] = [
    ({}, "body.user_id"),
    ({"user_id": ""}, "body.user_id"),
    ({"user_id": " padded"}, "body.user_id"),
    ({"user_id": "u" * 129}, "body.user_id"),
    ({"preferred_categories": "Drama"}, "body.preferred_categories"),
    ({"preferred_categories": [""]}, "body.preferred_categories.0"),
    ({"preferred_categories": ["Drama", 7]}, "body.preferred_categories.1"),
    ({"preferred_categories": ["x" * 101]}, "body.preferred_categories.0"),
    ({"preferred_categories": ["tab\there"]}, "body.preferred_categories.0"),
    ({"preferred_categories": [f"c{k}" for k in range(21)]}, "body.preferred_categories"),
    ({"language": "english"}, "body.language"),
    ({"language": "e"}, "body.language"),
    ({"country": "U1"}, "body.country"),
    ({"country": "USAA"}, "body.country"),
    ({"age": 33}, "body.age"),
]


@pytest.mark.parametrize("profile", ["local"])  # validation happens before any store: one profile is enough
def test_a_bad_profile_is_422_naming_the_field_and_writes_nothing(live: Live) -> None:
    for fields, where in BAD_PROFILES:
        body = {"user_id": "bad-profile", **fields} if "user_id" not in fields and fields else fields
        answer = live.http.post("/users", json=body)
        assert answer.status_code == 422, (fields, answer.text)
        assert [e["field"] for e in answer.json()["detail"]] == [where], (fields, answer.json())
    assert live.stored_user("bad-profile") is None
    with client(str(live.http.base_url), key=None) as anonymous:
        assert anonymous.post("/users", json={"user_id": "bad-profile"}).status_code == 401
    assert live.stored_user("bad-profile") is None


def test_onboarding_categories_shape_the_very_next_answer(live: Live) -> None:
    user = new_user()
    first, second = sorted(set(live.categories.values()))[:2]
    assert live.http.post("/users", json={"user_id": user, "preferred_categories": [first]}).status_code == 201
    body = live.top(user, n=8)
    assert body["degradation"] == "cold_start"
    assert {live.category(i["item_id"]) for i in body["items"]} == {first}
    assert {i["explanation"] for i in body["items"]} == {"popular_in_category"}
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True), "the category's most popular first"
    assert live.http.post("/users", json={"user_id": user, "preferred_categories": [second]}).status_code == 200
    assert {live.category(i["item_id"]) for i in live.top(user, n=8)["items"]} == {second}, "an update shows at once"
    in_second = sum(c == second for c in live.categories.values())
    padded = live.top(user, n=in_second + 5)["items"]  # more than the category holds: popular items follow
    explanations = [i["explanation"] for i in padded]
    k = explanations.count("popular_in_category")
    assert 0 < k <= in_second and explanations == ["popular_in_category"] * k + ["popular"] * (len(padded) - k)
    assert {live.category(i["item_id"]) for i in padded[:k]} == {second}
    assert {i["score"] for i in padded[k:]} == {0.0} and len({i["item_id"] for i in padded}) == len(padded)


def test_the_first_interaction_creates_the_user_and_the_session_shapes_the_list(live: Live) -> None:
    user = new_user()
    before = live.top(user, n=10)
    assert before["degradation"] == "cold_start"
    clicked = str(live.world.events["item_id"].value_counts().index[0])  # consumed with many others
    sent = live.http.post("/interactions", json={"user_id": user, "item_id": clicked, "action_type": "click"})
    assert sent.status_code == 202, sent.text  # accepted: not 404
    wait_until(lambda: live.stored_user(user) is not None, "the users consumer created the catalog row")
    row = live.stored_user(user)
    assert row is not None and row["last_active_at"] is not None and row["preferred_categories"] is None

    def personalized() -> bool:
        return live.top(user, n=10)["degradation"] != "cold_start"

    wait_until(personalized, "the session reached serving")
    after = live.top(user, n=10)
    items = [i["item_id"] for i in after["items"]]
    assert after["degradation"] == "candidate_scores"  # the full path (no ranker in this world)
    assert clicked not in items, "what the session touched is not recommended again"
    picks = [item for item, _ in live.neighbours.similar([clicked], 3, {clicked}, recency=0.8)]
    assert [(i["item_id"], i["source"]) for i in after["items"][:3]] == [(p, "session") for p in picks], \
        "the clicked item's nearest neighbours lead"
    assert items != [i["item_id"] for i in before["items"]]
    with open_interactions(live.settings) as store:
        wait_until(lambda: sent.json()["event_id"] in set(store.user_events(user)["event_id"]),
                   "the interaction store holds the event")
    # A profile given after the first click keeps the row the consumer made, and the answer stays personal.
    profile = live.http.post("/users", json={"user_id": user, "preferred_categories": ["Drama"]})
    assert profile.status_code == 200, profile.text
    stored = live.stored_user(user)
    assert stored is not None and stored["last_active_at"] == row["last_active_at"]
    assert live.top(user, n=10)["degradation"] == "candidate_scores"


def test_a_registered_user_whose_row_missed_their_events_is_not_new(live: Live) -> None:
    """Events the interaction store holds (an older deployment, a lagging `users` consumer) count too."""
    user = new_user()
    assert live.http.post("/users", json={"user_id": user, "preferred_categories": ["Drama"]}).status_code == 201
    clicked = str(live.world.events["item_id"].value_counts().index[0])
    event = {"kind": "interaction", "schema_version": 1, "event_id": str(uuid.uuid4()), "user_id": user,
             "item_id": clicked, "event_time": "2026-01-05T10:00:00Z", "action_type": "click", "value": None,
             "session_id": None, "context": {}}
    validate(event)
    writer = open_consumer(live.settings, "store-writer")  # the interaction store alone, not the catalog
    writer.handle([event])
    writer.close()
    stored = live.stored_user(user)
    assert stored is not None and stored["last_active_at"] is None and not stored["total_interactions"]
    body = live.top(user, n=10)
    assert body["degradation"] == "candidate_scores" and clicked not in {i["item_id"] for i in body["items"]}


def test_feedback_of_an_unknown_user_is_accepted(live: Live) -> None:
    user = new_user()
    dismissed = live.top(user, n=5)["items"][0]["item_id"]
    answer = live.http.post("/feedback", json={"user_id": user, "item_id": dismissed, "kind": "not_interested"})
    assert answer.status_code == 202, answer.text
    wait_until(lambda: live.stored_user(user) is not None, "the users consumer created the catalog row")
    assert dismissed not in {i["item_id"] for i in live.top(user, n=50)["items"]}


def test_post_users_is_503_while_the_catalog_is_down(tmp_path: Path) -> None:
    base = Settings.load()
    settings = api_settings(base.model_copy(update={
        "data_dir": tmp_path, "profile": "services",
        "postgres": base.postgres.model_copy(update={"port": closed_port()})}))
    with served(create_app(settings, FakeService(), RecordingBus(), users=CatalogUsers(settings),
                           close_on_shutdown=True)) as url, client(url) as http:
        answers = [http.post("/users", json={"user_id": "u1", "language": "en"}) for _ in range(2)]
        still = http.get("/recommendations", params={"user_id": "u1"})
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "catalog_unavailable" and "retry" in answer.json()["detail"]
        assert int(answer.headers["Retry-After"]) >= 1
    assert still.status_code == 200


def test_post_users_without_a_directory_is_503(tmp_path: Path) -> None:
    settings = api_settings(Settings.load().model_copy(update={"data_dir": tmp_path}))
    with served(create_app(settings, FakeService(), RecordingBus())) as url, client(url) as http:
        answer = http.post("/users", json={"user_id": "u1"})
    assert answer.status_code == 503 and answer.json()["error"] == "store_unavailable"
