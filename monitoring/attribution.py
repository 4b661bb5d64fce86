"""What was served and what users did with it: impressions from the serving log, events attributed to them.

An event is attributed to an impression (one served item of one answer) in one of two ways:
- by id: the client sent back the answer's `request_id` on `POST /interactions` (kept in the event's
  `context` under "request_id") and that answer served the event's item;
- by time, for events without a usable id: the user's latest impression of that item at most
  `monitoring.attribution_minutes` before the event.
Events neither way attributes keep null impression columns (organic events: search, browsing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys import serving_log
from recsys.backends import open_lake
from recsys.events import INTERACTION_COLUMNS, INTERACTION_SCHEMA
from recsys.settings import Settings

#: The columns of an impression, one per served item.
IMPRESSION_COLUMNS = ("request_id", "served_at", "user_id", "variant", "bucket", "model_version",
                      "candidates_version", "degradation", "cached", "latency_ms", "item_id", "rank", "score",
                      "source", "explanation")
#: What `attribute` adds to each event.
ATTRIBUTED_COLUMNS = ("request_id", "variant", "rank", "served_at")


@dataclass(frozen=True)
class Served:
    log: pd.DataFrame  # serving_log.SCHEMA rows, one per answer
    impressions: pd.DataFrame  # IMPRESSION_COLUMNS, one per served item
    events: pd.DataFrame  # the window's interaction events with ATTRIBUTED_COLUMNS (null when not attributed)


def impressions(log: pd.DataFrame) -> pd.DataFrame:
    """One row per served item of each logged answer, rank 1-based."""
    if log.empty:
        frame = pd.DataFrame({name: pd.Series(dtype="object") for name in IMPRESSION_COLUMNS})
        return frame.astype({"rank": "int64", "score": "float64", "latency_ms": "float64"})
    lengths = log["item_ids"].map(len).to_numpy()
    repeat = np.repeat(np.arange(len(log)), lengths)
    per_answer = [c for c in IMPRESSION_COLUMNS if c in log.columns and c not in ("item_id", "score")]
    frame = log.iloc[repeat][per_answer].reset_index(drop=True)
    frame["item_id"] = np.concatenate([np.asarray(v, dtype=object) for v in log["item_ids"]]) if len(repeat) else []
    frame["rank"] = np.concatenate([np.arange(1, n + 1) for n in lengths]) if len(repeat) else []
    frame["score"] = np.concatenate([np.asarray(v, dtype="float64") for v in log["scores"]]) if len(repeat) else []
    frame["source"] = np.concatenate([np.asarray(v, dtype=object) for v in log["sources"]]) if len(repeat) else []
    frame["explanation"] = (np.concatenate([np.asarray(v, dtype=object) for v in log["explanations"]])
                            if len(repeat) else [])
    return frame[list(IMPRESSION_COLUMNS)]


def request_id_of(context: object) -> str | None:
    """The request_id a client sent back, from an event's context JSON (None when absent or unreadable)."""
    if not isinstance(context, str) or "request_id" not in context:
        return None
    try:
        value = json.loads(context).get("request_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def attribute(shown: pd.DataFrame, events: pd.DataFrame, window: timedelta) -> pd.DataFrame:
    """`events` with ATTRIBUTED_COLUMNS: the impression each event is attributed to (see the module doc)."""
    result = events.reset_index(drop=True).copy()
    result["_row"] = np.arange(len(result))
    for name in ATTRIBUTED_COLUMNS:
        result[name] = None
    result["rank"] = np.nan
    if result.empty or shown.empty:
        return result.drop(columns="_row")
    keep = ["request_id", "item_id", "user_id", "variant", "rank", "served_at"]
    pairs = shown[keep]

    # By id: the request the client named served this item.
    sent = result["context"].map(request_id_of) if "context" in result else pd.Series(None, index=result.index)
    named = result.assign(_sent=sent)[["_row", "_sent", "item_id", "user_id"]].dropna(subset=["_sent"])
    by_id = named.merge(pairs, left_on=["_sent", "item_id", "user_id"], right_on=["request_id", "item_id", "user_id"])
    by_id = by_id.sort_values("rank").drop_duplicates("_row")
    matched = set(by_id["_row"])

    # By time: the user's latest impression of the item within the window before the event.
    rest = result.loc[~result["_row"].isin(matched), ["_row", "user_id", "item_id", "event_time"]]
    rest = rest.assign(event_time=pd.to_datetime(rest["event_time"], utc=True).astype("datetime64[ms, UTC]"))
    rest = rest.sort_values("event_time")
    timed = pairs.assign(served_at=pd.to_datetime(pairs["served_at"], utc=True).astype("datetime64[ms, UTC]"))
    timed = timed.sort_values("served_at")
    by_time = pd.merge_asof(rest, timed, left_on="event_time", right_on="served_at", by=["user_id", "item_id"],
                            direction="backward", tolerance=pd.Timedelta(window)).dropna(subset=["request_id"])

    for found in (by_id, by_time):
        if found.empty:
            continue
        rows = found["_row"].to_numpy()
        for name in ATTRIBUTED_COLUMNS:
            values = found[name].to_numpy()
            if name == "rank":
                result.loc[rows, name] = values.astype("float64")
            else:
                result[name] = result[name].astype("object")
                result.loc[rows, name] = values
    return result.drop(columns="_row")


def load(settings: Settings, since: datetime | None = None, until: datetime | None = None) -> Served:
    """The window's serving log, its impressions, and the window's events attributed to them.

    Events are read from the lake from `since` to `until` plus the attribution window (a click comes after
    its impression)."""
    window = timedelta(minutes=settings.monitoring.attribution_minutes)
    log = serving_log.read(settings.lake_path, since, until)
    shown = impressions(log)
    columns = list(INTERACTION_COLUMNS)
    start = since if since is not None else (log["served_at"].min() if not log.empty else None)
    end = until if until is not None else (log["served_at"].max() if not log.empty else None)
    if start is None or end is None or pd.isna(start) or pd.isna(end):
        return Served(log, shown, attribute(shown, INTERACTION_SCHEMA.empty_table().to_pandas(), window))
    kind = INTERACTION_SCHEMA.field("event_time").type
    condition = ((pc.field("event_time") >= pa.scalar(pd.Timestamp(start), type=kind))
                 & (pc.field("event_time") < pa.scalar(pd.Timestamp(end) + window, type=kind)))
    events = open_lake(settings).interactions(filter=condition, columns=columns).to_pandas()
    return Served(log, shown, attribute(shown, events, window))
