"""The `user_realtime` features: one definition, two evaluators that a test proves equal.

The features describe a user's last day as of their newest event, over their activity log (the newest
`MAX_EVENTS` interactions within `KEEP_MS` of the newest, `recsys.stores.activity`):

| feature | type | meaning |
|---|---|---|
| `events_1h`, `events_1d` | Int64 | interactions of any action in the last hour / day |
| `{action}_1h`, `{action}_1d` | Int64 | the same per action in `COUNTED` (view, click, add_to_cart, purchase, rate) |
| `last_items` | Array(String) | the last `LAST_ITEMS` distinct items, newest first |
| `last_categories` | Array(String) | the distinct categories of `last_items`, newest first, at most `LAST_CATEGORIES` |
| `session_events` | Int64 | events of the session still open (no gap over the session gap) |
| `session_started_at`, `last_event_at` | UnixTimestamp | when that session started; the newest event |
| `last_item_id`, `last_action` | String | the newest event's item and action |

`realtime_features` evaluates them for one log (the feature updater, after each batch, pushes the result
with the newest event's time as its timestamp); `realtime_history` evaluates them for every event of the
lake at once (vectorized), the offline table training joins point in time. A window counts events at
times in (t - window, t].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.stores.activity import KEEP_MS, MAX_EVENTS, Activity, current_session

WINDOWS = {"1h": 3_600_000, "1d": 86_400_000}
COUNTED = ("view", "click", "add_to_cart", "purchase", "rate")
LAST_ITEMS = 10
LAST_CATEGORIES = 5
SESSION_GAP_MS = 30 * 60_000
PUSH_SOURCE = "user_realtime_push"
INT_FEATURES = tuple(f"events_{w}" for w in WINDOWS) + tuple(f"{a}_{w}" for a in COUNTED for w in WINDOWS) + (
    "session_events",)
FEATURES = (*INT_FEATURES, "last_items", "last_categories", "session_started_at", "last_event_at", "last_item_id",
            "last_action")
_TIME = pa.timestamp("us", tz="UTC")
#: The view's rows as Arrow: the offline table's schema and what the feature updater writes online.
SCHEMA = pa.schema([
    ("user_id", pa.string()), ("event_timestamp", _TIME), ("created_timestamp", _TIME),
    *((name, pa.int64()) for name in INT_FEATURES),
    ("last_items", pa.list_(pa.string())), ("last_categories", pa.list_(pa.string())),
    ("session_started_at", _TIME), ("last_event_at", _TIME), ("last_item_id", pa.string()),
    ("last_action", pa.string()),
])
assert WINDOWS["1d"] <= KEEP_MS  # the log holds every event the widest window counts


def _ts(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def realtime_features(user_id: str, log: Sequence[Activity], categories: Mapping[str, str],
                      gap_ms: int = SESSION_GAP_MS) -> dict[str, Any]:
    """The feature row of a user's log (oldest first, non-empty), as of its newest event."""
    newest = log[-1]
    row: dict[str, Any] = {"user_id": user_id, "event_timestamp": _ts(newest.at_ms)}
    for window, width in WINDOWS.items():
        inside = [a for a in log if a.at_ms > newest.at_ms - width]
        row[f"events_{window}"] = len(inside)
        for action in COUNTED:
            row[f"{action}_{window}"] = sum(1 for a in inside if a.action == action)
    items = list(dict.fromkeys(a.item_id for a in reversed(log)))[:LAST_ITEMS]
    row["last_items"] = items
    row["last_categories"] = _categories_of(items, categories)
    session = current_session(log, newest.at_ms, gap_ms)
    row["session_events"] = len(session)
    row["session_started_at"] = _ts(session[0].at_ms)
    row["last_event_at"] = _ts(newest.at_ms)
    row["last_item_id"] = newest.item_id
    row["last_action"] = newest.action
    return row


def _categories_of(items: Sequence[str], categories: Mapping[str, str]) -> list[str]:
    found = (categories.get(i) or "" for i in items)
    return [c for c in dict.fromkeys(found) if c][:LAST_CATEGORIES]


def to_arrow(rows: pd.DataFrame) -> pa.Table:
    """Feature rows (`realtime_features` / `realtime_history`, with `created_timestamp`) as `SCHEMA`."""
    rows = rows.copy()
    for name in ("event_timestamp", "created_timestamp", "session_started_at", "last_event_at"):
        rows[name] = pd.to_datetime(rows[name], utc=True).dt.as_unit("us")
    return pa.Table.from_pandas(rows[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def realtime_history(events: pd.DataFrame, categories: Mapping[str, str],
                     gap_ms: int = SESSION_GAP_MS) -> pd.DataFrame:
    """The feature row after every event of `events` (user_id, item_id, event_time, action_type, event_id):
    one row per user and event time (events at the same time count together), as `realtime_features`
    gives for the log that holds the user's events up to that moment."""
    columns = ["user_id", "event_timestamp", *FEATURES]
    if events.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({
        "user_id": events["user_id"].astype(str).to_numpy(), "item_id": events["item_id"].astype(str).to_numpy(),
        "at": pd.to_datetime(events["event_time"], utc=True).dt.as_unit("ms").astype("int64").to_numpy(),
        "action": events["action_type"].astype(str).to_numpy(), "event_id": events["event_id"].astype(str).to_numpy(),
    }).sort_values(["user_id", "at", "event_id"], kind="stable").reset_index(drop=True)
    n = len(frame)
    user_codes = pd.factorize(frame["user_id"])[0]
    at = frame["at"].to_numpy(dtype=np.int64)
    index = np.arange(n)
    first_of_user = np.r_[0, np.flatnonzero(np.diff(user_codes)) + 1]
    user_start = np.repeat(first_of_user, np.diff(np.r_[first_of_user, n]))
    # The log holds the newest MAX_EVENTS within KEEP_MS: no row before this one counts.
    span = int(at.max() - at.min()) + KEEP_MS + 1  # users apart by more than any window reaches
    key = user_codes.astype(np.int64) * span + (at - at.min())  # ordered by (user, time)
    log_start = np.maximum(np.maximum(user_start, index - MAX_EVENTS + 1),
                           np.searchsorted(key, key - KEEP_MS, side="right"))
    # Rows at the same time as a later row of the same user are states nobody sees: the last one counts.
    last_at_time = np.r_[(user_codes[1:] != user_codes[:-1]) | (at[1:] != at[:-1]), True]
    out: dict[str, Any] = {"user_id": frame["user_id"].to_numpy(), "event_timestamp": pd.to_datetime(at, unit="ms",
                                                                                                    utc=True)}
    actions = frame["action"].to_numpy()
    for window, width in WINDOWS.items():
        lo = np.maximum(log_start, np.searchsorted(key, key - width, side="right"))
        out[f"events_{window}"] = index - lo + 1
        for action in COUNTED:
            running = np.r_[0, np.cumsum(actions == action)]
            out[f"{action}_{window}"] = running[index + 1] - running[lo]
    # Sessions: a new one where the gap to the previous event of the user is over gap_ms.
    new_session = np.r_[True, (np.diff(at) > gap_ms) | (user_codes[1:] != user_codes[:-1])]
    session_start = np.maximum.accumulate(np.where(new_session, index, 0))
    session_from = np.maximum(session_start, log_start)
    out["session_events"] = index - session_from + 1
    out["session_started_at"] = pd.to_datetime(at[session_from], unit="ms", utc=True)
    out["last_event_at"] = out["event_timestamp"]
    out["last_item_id"] = frame["item_id"].to_numpy()
    out["last_action"] = actions
    items = frame["item_id"].to_numpy()
    last_items, last_categories = [], []
    for row in range(n):
        recent: list[str] = []
        k = row
        while k >= log_start[row] and len(recent) < LAST_ITEMS:
            if items[k] not in recent:
                recent.append(items[k])
            k -= 1
        last_items.append(recent)
        last_categories.append(_categories_of(recent, categories))
    out["last_items"] = last_items
    out["last_categories"] = last_categories
    history = pd.DataFrame(out)[last_at_time].reset_index(drop=True)
    for name in INT_FEATURES:
        history[name] = history[name].astype("int64")
    return history[columns]
