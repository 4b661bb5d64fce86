"""One contract for every ActivityStore (the consumers' per-user logs): SQLite (`local`) and Redis (`services`)."""

from __future__ import annotations

import uuid

from recsys.backends import open_activity
from recsys.settings import Settings
from recsys.stores.activity import KEEP_MS, MAX_EVENTS, Activity, current_session

HOUR = 3_600_000


def test_logs_merge_by_event_id_per_prefix_and_survive_a_reopen(settings: Settings) -> None:
    user = f"act-{uuid.uuid4().hex[:8]}"
    a, b, c = (Activity(f"e{k}", 1_000_000 + k * 1000, f"i{k}", "click") for k in range(3))
    with open_activity(settings, "session") as store:
        assert store.recent(user) == []
        assert store.append({user: [b, a]}) == {user: [a, b]}  # by time
        assert store.append({user: [b, c]})[user] == [a, b, c]  # b again: written once
    with open_activity(settings, "session") as reopened, open_activity(settings, "recent") as other:
        assert reopened.recent(user) == [a, b, c]
        assert other.recent(user) == []  # each consumer's log is its own


def test_logs_keep_the_last_day_and_at_most_max_events(settings: Settings) -> None:
    user = f"act-{uuid.uuid4().hex[:8]}"
    old = Activity("old", 0, "i0", "view")
    many = [Activity(f"n{k}", KEEP_MS + 10 + k, f"i{k}", "view") for k in range(MAX_EVENTS + 5)]
    with open_activity(settings, "session") as store:
        store.append({user: [old]})
        log = store.append({user: many})[user]
    assert old not in log and len(log) == MAX_EVENTS and log[-1] == many[-1]


def test_the_current_session_is_the_run_without_a_long_gap_that_reaches_now() -> None:
    gap = 30 * 60_000
    log = [Activity("a", 0, "i1", "view"), Activity("b", HOUR, "i2", "view"), Activity("c", HOUR + gap, "i3", "click")]
    assert [x.event_id for x in current_session(log, HOUR + gap + 1, gap)] == ["b", "c"]
    assert current_session(log, HOUR + 2 * gap + 1, gap) == []  # closed by inactivity
    assert current_session([], 0, gap) == []
