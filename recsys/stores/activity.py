"""Each user's recent activity (the last day of events), kept by the streaming consumers.

Two consumers keep a log of their own under their own key prefix: the session aggregator
(`session:{user_id}`, read by the serving pipeline) and the feature updater (`recent:{user_id}`, from which
it computes the `user_realtime` features). An entry is (event_id, time, item, action); appending is
idempotent by event_id (a redelivered batch changes nothing), and the log keeps only the day before
its newest event (`KEEP_MS`) and at most `MAX_EVENTS` entries.

Backends: `activity_redis` (`services`: one JSON value per user, expiring a day after its last write) and
`activity_sqlite` (`local`), chosen in `recsys.backends`; one contract test for both.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from recsys.stores.base import Store

KEEP_MS = 24 * 3600 * 1000
MAX_EVENTS = 200
#: The negative actions: they end up in the log (a session counts them) but are never "what was just viewed".
NEGATIVE_ACTIONS = frozenset({"skip", "not_interested", "report"})


class Activity(NamedTuple):
    """One entry of a log (a tuple: tens of thousands are decoded per batch)."""

    event_id: str
    at_ms: int
    item_id: str
    action: str


class ActivityStore(Store):
    prefix: str

    @abstractmethod
    def append(self, events: Mapping[str, Sequence[Activity]]) -> dict[str, list[Activity]]:
        """Merge each user's new events into their log; returns each updated log, oldest first."""

    @abstractmethod
    def recent(self, user_id: str) -> list[Activity]:
        """The user's log, oldest first (empty when none)."""


def merge(old: Sequence[Activity], new: Sequence[Activity]) -> list[Activity]:
    """Old and new by time, once per event_id, trimmed to the day before the newest and MAX_EVENTS."""
    by_id = {a.event_id: a for a in new}
    by_id.update({a.event_id: a for a in old})  # the first write of an event wins
    merged = list(by_id.values())
    merged.sort(key=lambda a: (a.at_ms, a.event_id))
    if not merged:
        return merged
    horizon = merged[-1].at_ms - KEEP_MS
    return [a for a in merged if a.at_ms > horizon][-MAX_EVENTS:]


def current_session(log: Sequence[Activity], now_ms: int, gap_ms: int) -> list[Activity]:
    """The events of the session still open at `now_ms` (no gap over `gap_ms`), oldest first; [] if closed."""
    if not log or now_ms - log[-1].at_ms > gap_ms:
        return []
    start = len(log) - 1
    while start > 0 and log[start].at_ms - log[start - 1].at_ms <= gap_ms:
        start -= 1
    return list(log[start:])


def dumps(log: Sequence[Activity]) -> str:
    return json.dumps(log, separators=(",", ":"))  # each entry a JSON array, as tuples are


def loads(text: str | bytes | None) -> list[Activity]:
    return [] if not text else [Activity._make(entry) for entry in json.loads(text)]
