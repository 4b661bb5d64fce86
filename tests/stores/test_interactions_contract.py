"""One contract for every InteractionStore: SQLite (`local`) and Cassandra (`services`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from recsys.events import INTERACTION_COLUMNS
from recsys.stores import InteractionStore

T0 = datetime(2024, 1, 31, 23, 0, tzinfo=UTC)


def events(rows: list[tuple[str, str, str, datetime, str]], **columns: list[object]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "event_time", "action_type"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["value"] = columns.get("value", [None] * len(rows))
    frame["session_id"] = columns.get("session_id", [None] * len(rows))
    frame["context"] = columns.get("context", [None] * len(rows))
    return frame[list(INTERACTION_COLUMNS)]


def test_rewriting_the_same_events_changes_no_count(interactions: InteractionStore) -> None:
    batch = events([("e1", "u1", "m1", T0, "view"), ("e2", "u1", "m2", T0 + timedelta(minutes=1), "click")])
    interactions.write(batch)
    interactions.write(batch)
    assert interactions.counts() == {"interactions": 2, "item_interactions": 2}


def test_two_events_of_one_user_on_one_item_in_one_instant_are_both_kept(interactions: InteractionStore) -> None:
    interactions.write(events(
        [("e1", "u1", "m1", T0, "tag"), ("e2", "u1", "m1", T0, "tag")],
        context=['{"tag":"funny"}', '{"tag":"quotable"}'],
    ))
    history = interactions.user_events("u1")
    assert sorted(history["event_id"]) == ["e1", "e2"]
    assert sorted(history["context"]) == ['{"tag":"funny"}', '{"tag":"quotable"}']
    assert len(interactions.item_events("m1", T0, T0)) == 2


def test_different_users_on_one_item_in_one_instant_are_both_kept(interactions: InteractionStore) -> None:
    interactions.write(events([("e1", "u1", "m1", T0, "view"), ("e2", "u2", "m1", T0, "view")]))
    assert sorted(interactions.item_events("m1", T0, T0)["user_id"]) == ["u1", "u2"]


def test_user_history_is_newest_first_with_limit_and_since(interactions: InteractionStore) -> None:
    rows = [(f"e{k}", "u1", f"m{k}", T0 + timedelta(hours=k), "view") for k in range(5)]
    interactions.write(events(rows, value=[None, 4.5, None, None, 1.0], session_id=["s1"] * 5))
    history = interactions.user_events("u1", limit=3)
    assert list(history["event_id"]) == ["e4", "e3", "e2"]
    assert history["value"].tolist()[0] == 1.0 and history["session_id"].tolist() == ["s1"] * 3
    since = interactions.user_events("u1", since=T0 + timedelta(hours=1))
    assert list(since["event_id"]) == ["e4", "e3", "e2", "e1"]
    assert since.set_index("event_id").at["e1", "value"] == 4.5
    assert interactions.user_events("nobody").empty


def test_recent_items_are_the_item_ids_of_user_events_in_their_order(interactions: InteractionStore) -> None:
    rows = [(f"e{k}", "u1", f"m{k % 3}", T0 + timedelta(hours=k), "view") for k in range(5)]
    rows.append(("e9", "u1", "m7", T0 + timedelta(hours=4), "click"))  # a tie in time: event id decides
    interactions.write(events(rows))
    assert interactions.recent_items("u1", limit=4) == ["m1", "m7", "m0", "m2"]
    assert interactions.recent_items("u1", limit=4) == [str(i) for i in interactions.user_events("u1", 4)["item_id"]]
    assert interactions.recent_items("nobody") == []


def test_item_events_span_time_buckets(interactions: InteractionStore) -> None:
    # T0 is the last hour of January: these events fall in two monthly (and three daily) buckets.
    rows = [(f"e{k}", f"u{k}", "m1", T0 + timedelta(hours=k), "view") for k in range(3)]
    interactions.write(events(rows))
    found = interactions.item_events("m1", T0, T0 + timedelta(hours=2))
    assert list(found["event_id"]) == ["e2", "e1", "e0"]
    assert list(interactions.item_events("m1", T0 + timedelta(hours=1), T0 + timedelta(days=30))["event_id"]) == [
        "e2", "e1",
    ]
    assert interactions.item_events("m1", T0 - timedelta(days=40), T0 - timedelta(days=1)).empty
