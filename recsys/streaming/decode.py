"""The wire format of `interaction-events`, checked on the way in.

A message is a JSON object with ``kind`` (``interaction`` or ``feedback``), keyed by ``user_id``; the
API writes ``schema_version`` 1 (messages without one are version 1, as the first producers wrote them).
`decode` raises `InvalidEvent` with the reason the dead-letter queue records; `interaction_row` is the
row the stores and the lake keep (ratings become ``rate`` interactions; not-interested and report
feedback are not interactions). An optional ``request_id`` (the answer that showed the item) is kept in the
row's ``context`` JSON under "request_id".
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd

from recsys.events import ACTION_TYPES, INTERACTION_COLUMNS, context_to_json

SCHEMA_VERSION = 1
FEEDBACK_KINDS = ("rating", "not_interested", "report")
MAX_ID = 128


class InvalidEvent(ValueError):
    """An event the consumers cannot apply; `reason` goes into the dead-letter record's headers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise InvalidEvent("empty message (tombstone)")
    try:
        payload = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidEvent(f"not a JSON object but {type(payload).__name__}")
    validate(payload)
    return payload


def validate(payload: dict[str, Any]) -> None:
    version = payload.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidEvent(f"unknown schema_version {version!r} (this consumer reads {SCHEMA_VERSION})")
    kind = payload.get("kind")
    if kind not in ("interaction", "feedback"):
        raise InvalidEvent(f"unknown kind {kind!r}; expected interaction or feedback")
    for name in ("event_id", "user_id", "item_id"):
        value = payload.get(name)
        if not isinstance(value, str) or not value or len(value) > MAX_ID:
            raise InvalidEvent(f"{name} must be a non-empty string of at most {MAX_ID} characters, got {value!r}")
    if kind == "interaction" and payload.get("action_type") not in ACTION_TYPES:
        raise InvalidEvent(f"unknown action_type {payload.get('action_type')!r}")
    if kind == "feedback" and payload.get("feedback") not in FEEDBACK_KINDS:
        raise InvalidEvent(f"unknown feedback {payload.get('feedback')!r}")
    value = payload.get("value")
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise InvalidEvent(f"value must be a number or null, got {value!r}")
    request_id = payload.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID):
        raise InvalidEvent(f"request_id must be null or a non-empty string of at most {MAX_ID} characters")
    if kind == "feedback" and payload["feedback"] == "rating" and value is None:
        raise InvalidEvent("a rating needs a value")
    try:
        payload["_at"] = event_time(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"event_time {payload.get('event_time')!r} is not an ISO 8601 time: {exc}") from exc


def event_time(payload: dict[str, Any]) -> pd.Timestamp:
    moment = pd.Timestamp(payload["event_time"])
    if pd.isna(moment):
        raise ValueError("missing")
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def action_of(payload: dict[str, Any]) -> str | None:
    """The interaction's action type; `rate` for a rating; None for feedback that is not an interaction."""
    if payload["kind"] == "interaction":
        return str(payload["action_type"])
    return "rate" if payload["feedback"] == "rating" else None


def interaction_rows(events: list[dict[str, Any]]) -> pd.DataFrame:
    """The interaction rows of a batch (validated events), in the stores' and the lake's columns."""
    rows = []
    for payload in events:
        action = action_of(payload)
        if action is None:
            continue
        interaction = payload["kind"] == "interaction"
        context = dict(payload.get("context") or {}) if interaction else {}
        if isinstance(payload.get("request_id"), str):  # the answer that showed the item (attribution)
            context["request_id"] = payload["request_id"]
        rows.append({
            "event_id": payload["event_id"], "user_id": payload["user_id"], "item_id": payload["item_id"],
            "event_time": payload.get("_at", None) or event_time(payload), "action_type": action,
            "value": payload.get("value"), "session_id": payload.get("session_id") if interaction else None,
            "context": context_to_json(context),
        })
    frame = pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS))
    frame["value"] = frame["value"].astype("float64")
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).astype("datetime64[ms, UTC]")
    return frame


def millis(moment: datetime | pd.Timestamp) -> int:
    return int(pd.Timestamp(moment).value // 1_000_000)
