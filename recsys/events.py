"""The interaction event schema shared by ingestion, the stores, the lake and the services.

An interaction is one row of :data:`INTERACTION_COLUMNS`. ``event_id`` makes writes idempotent:
imported rows get a deterministic id (re-import writes nothing new), live events carry the
client's id or a generated one (at-least-once delivery writes once).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa

EVENT_NAMESPACE = uuid.UUID("6f1c2b2e-6a7e-4df4-9d0e-3f1b6f0c9a11")

#: The action types the platform knows; imports reject anything else.
ACTION_TYPES = ("view", "click", "add_to_cart", "purchase", "rate", "tag", "like", "skip", "share")

INTERACTION_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_time", pa.timestamp("ms", tz="UTC")),
        ("action_type", pa.string()),
        ("value", pa.float64()),
        ("session_id", pa.string()),
        ("context", pa.string()),  # JSON object of string -> string
    ]
)
INTERACTION_COLUMNS = tuple(INTERACTION_SCHEMA.names)


def deterministic_event_ids(frame: pd.DataFrame, source: str) -> pd.Series:
    """Ids derived from every field of an event, so the same row always gets the same id."""
    parts: Iterable[tuple[object, ...]] = zip(
        frame["user_id"],
        frame["item_id"],
        frame["event_time"].astype("int64"),
        frame["action_type"],
        frame["value"].fillna(-1.0) if "value" in frame else [None] * len(frame),
        frame["session_id"].fillna("") if "session_id" in frame else [""] * len(frame),
        frame["context"].fillna("") if "context" in frame else [""] * len(frame),
    )
    return pd.Series(
        [str(uuid.uuid5(EVENT_NAMESPACE, f"{source}|" + "|".join(map(str, p)))) for p in parts],
        index=frame.index,
        dtype="string",
    )


def new_event_id() -> str:
    """An id for a live event whose client sent none."""
    return str(uuid.uuid4())


def context_to_json(context: dict[str, str] | None) -> str | None:
    return None if not context else json.dumps(context, sort_keys=True, separators=(",", ":"))


def context_from_json(text: str | None) -> dict[str, str]:
    return {} if not text else dict(json.loads(text))


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A canonical interaction frame as an Arrow table with the exact schema."""
    return pa.Table.from_pandas(frame[list(INTERACTION_COLUMNS)], schema=INTERACTION_SCHEMA, preserve_index=False)
