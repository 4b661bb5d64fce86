"""What the consumers accept from the topic, and the reason each refusal gives the dead-letter queue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from recsys.streaming.decode import InvalidEvent, decode, interaction_rows


def message(**changes: Any) -> bytes:
    event = {"kind": "interaction", "schema_version": 1, "event_id": "e1", "user_id": "u1", "item_id": "i1",
             "event_time": "2026-05-01T10:00:00.000Z", "action_type": "click", "value": None, "session_id": "s1",
             "context": {"device": "ios"}}
    event.update(changes)
    return json.dumps({k: v for k, v in event.items() if v != "<drop>"}).encode()


def test_a_valid_event_decodes_and_becomes_one_row() -> None:
    event = decode(message())
    rows = interaction_rows([event, decode(message(event_id="e2", kind="feedback", feedback="rating", value=4.5,
                                                   action_type="<drop>"))])
    assert rows["event_id"].tolist() == ["e1", "e2"]
    assert rows["action_type"].tolist() == ["click", "rate"] and rows["value"].tolist()[1] == 4.5
    assert str(rows["event_time"].dtype) == "datetime64[ms, UTC]"
    assert decode(message(schema_version="<drop>"))["event_id"] == "e1"  # the first producers wrote none


def test_not_interested_feedback_is_not_an_interaction_row() -> None:
    event = decode(message(kind="feedback", feedback="not_interested", action_type="<drop>"))
    assert interaction_rows([event]).empty


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xff\xfe not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (None, "tombstone"),
    (message(schema_version=2), "unknown schema_version 2"),
    (message(kind="purchase"), "unknown kind"),
    (message(action_type="teleport"), "unknown action_type 'teleport'"),
    (message(user_id=""), "user_id must be a non-empty string"),
    (message(item_id=7), "item_id must be a non-empty string"),
    (message(value="five"), "value must be a number"),
    (message(event_time="yesterday-ish"), "event_time 'yesterday-ish' is not an ISO 8601 time"),
    (message(kind="feedback", feedback="rating", action_type="<drop>"), "a rating needs a value"),
])
def test_each_invalid_event_is_refused_with_its_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        decode(raw)
