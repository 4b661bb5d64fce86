"""The interaction store: every event by user (newest first) and by item and time bucket.

One interface, one implementation per backend (SQLite for `local`, Cassandra for `services`),
both checked by the same contract test. Writes are idempotent by ``event_id``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from recsys.events import INTERACTION_COLUMNS, context_from_json
from recsys.stores.base import Store

Bucket = Literal["day", "month"]
ITEM_EVENT_COLUMNS = ("event_id", "user_id", "item_id", "event_time", "action_type")


def time_buckets(event_time: pd.Series, granularity: Bucket) -> np.ndarray:
    """Partition bucket of each event: yyyymm for months, yyyymmdd for days."""
    times = pd.DatetimeIndex(event_time)
    month = times.year * 100 + times.month
    return np.asarray(month * 100 + times.day if granularity == "day" else month, dtype="int64")


def buckets_between(since: datetime, until: datetime, granularity: Bucket) -> list[int]:
    """Every bucket that overlaps [since, until], newest first."""
    periods = pd.period_range(_naive_utc(since), _naive_utc(until), freq="D" if granularity == "day" else "M")
    return sorted(set(time_buckets(pd.Series(periods.to_timestamp()), granularity).tolist()), reverse=True)


def _naive_utc(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def context_with_value(context_json: str | None, value: float | None) -> dict[str, str]:
    """The stored context map: the event's context plus its numeric value under 'value'."""
    context = context_from_json(context_json)
    if value is not None and not pd.isna(value):
        context["value"] = repr(float(value))
    return context


def split_value(context: dict[str, str] | None) -> tuple[float | None, dict[str, str]]:
    context = dict(context or {})
    raw = context.pop("value", None)
    return (float(raw) if raw is not None else None), context


def to_millis(event_time: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(event_time).as_unit("ms").asi8


def from_millis(millis: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(millis))


def chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


class InteractionStore(Store):
    """The design's `interactions` and `item_interactions` tables with corrected keys."""

    bucket: Bucket

    @abstractmethod
    def migrate(self) -> None:
        """Create the tables; safe to run again."""

    @abstractmethod
    def write(self, events: pd.DataFrame) -> int:
        """Write canonical interaction rows to both tables; rewriting an event_id changes nothing."""

    @abstractmethod
    def user_events(self, user_id: str, limit: int = 100, since: datetime | None = None) -> pd.DataFrame:
        """The user's events, newest first, with the columns of INTERACTION_COLUMNS."""

    def recent_items(self, user_id: str, limit: int = 100) -> list[str]:
        """The item ids of the user's newest `limit` events, newest first (the order of `user_events`).

        What the request path reads: ids only, no frame. Backends answer it with a narrower query."""
        return [str(item) for item in self.user_events(user_id, limit=limit)["item_id"]]

    @abstractmethod
    def item_events(self, item_id: str, since: datetime, until: datetime) -> pd.DataFrame:
        """The item's events in [since, until], newest first, with ITEM_EVENT_COLUMNS."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Row counts of interactions and item_interactions."""




def user_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS))
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame


def item_frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(ITEM_EVENT_COLUMNS))
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame
