"""The generic import format, for teams bringing their own data.

A directory with:
- ``interactions.csv`` or ``interactions.parquet`` (or a folder ``interactions/`` of Parquet parts):
  ``user_id, item_id, timestamp, action_type`` and optional ``value, session_id, context, event_id``.
  ``timestamp`` is epoch seconds or ISO 8601; ``context`` a JSON object; without ``event_id`` a
  deterministic id is derived from the row, so identical rows are one event.
- ``items.csv|parquet`` (optional when the catalog already has the items): ``item_id, title`` and optional
  ``description, category, subcategory, tags`` (``|``-separated), ``content_features`` (JSON object),
  ``created_at``.
- ``users.csv|parquet`` (optional): ``user_id`` and optional ``created_at, preferred_categories``
  (``|``-separated), ``language, country``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ingestion.sources import ITEM_METADATA, USER_PROFILE, Chunk, Source
from ingestion.validation import Column, DataFile, require_unique
from recsys.errors import ImportValidationError
from recsys.events import ACTION_TYPES, INTERACTION_COLUMNS, context_to_json, deterministic_event_ids
from recsys.stores.lake import Lake

INTERACTION_FILE = (
    Column("user_id"), Column("item_id"), Column("timestamp", "timestamp"),
    Column("action_type", choices=ACTION_TYPES),
    Column("value", "float", required=False, nullable=True),
    Column("session_id", required=False, nullable=True),
    Column("context", "json", required=False, nullable=True),
    Column("event_id", required=False, nullable=True),
)
ITEM_FILE = (
    Column("item_id"), Column("title"),
    Column("description", required=False, nullable=True),
    Column("category", required=False, nullable=True),
    Column("subcategory", required=False, nullable=True),
    Column("tags", "list", required=False, nullable=True),
    Column("content_features", "json", required=False, nullable=True),
    Column("created_at", "timestamp", required=False, nullable=True),
)
USER_FILE = (
    Column("user_id"),
    Column("created_at", "timestamp", required=False, nullable=True),
    Column("preferred_categories", "list", required=False, nullable=True),
    Column("language", required=False, nullable=True),
    Column("country", required=False, nullable=True),
)


def find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.parquet", directory / f"{stem}.csv", directory / stem):
        if candidate.exists():
            return candidate
    return None


class GenericSource(Source):
    def __init__(self, directory: Path, chunk_rows: int = 250_000) -> None:
        self.directory = Path(directory)
        self.name = f"generic:{self.directory}"
        found = find_file(self.directory, "interactions")
        if found is None:
            raise ImportValidationError(str(self.directory / "interactions.csv"), "file not found")
        self._interactions = DataFile(found, INTERACTION_FILE, chunk_rows)
        self._items_file = find_file(self.directory, "items")
        self._users_file = find_file(self.directory, "users")

    def items(self) -> pd.DataFrame | None:
        if self._items_file is None:
            return None
        file = DataFile(self._items_file, ITEM_FILE)
        items = file.read()
        require_unique(file, items, "item_id")
        return items.reindex(columns=list(ITEM_METADATA))

    def users(self) -> pd.DataFrame | None:
        if self._users_file is None:
            return None
        file = DataFile(self._users_file, USER_FILE)
        users = file.read()
        require_unique(file, users, "user_id")
        return users.reindex(columns=list(USER_PROFILE))

    def interaction_chunks(self) -> Iterator[Chunk]:
        for chunk in self._interactions.chunks():
            yield Chunk(self._interactions, canonical_interactions(chunk, source="generic"))

    def size_hint(self) -> int | None:
        path = self._interactions.path
        parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.suffix == ".parquet" else []
        return sum(pq.ParquetFile(part).metadata.num_rows for part in parts) or None


def canonical_interactions(chunk: pd.DataFrame, source: str) -> pd.DataFrame:
    """A checked chunk in the canonical interaction shape, with an event_id on every row."""
    frame = pd.DataFrame(index=chunk.index)
    frame["user_id"] = chunk["user_id"].astype("string")
    frame["item_id"] = chunk["item_id"].astype("string")
    frame["event_time"] = chunk["timestamp"]
    frame["action_type"] = chunk["action_type"].astype("string")
    frame["value"] = chunk["value"] if "value" in chunk else float("nan")
    frame["session_id"] = chunk["session_id"] if "session_id" in chunk else None
    contexts = chunk["context"] if "context" in chunk else pd.Series(None, index=chunk.index, dtype=object)
    frame["context"] = [context_to_json(c) if isinstance(c, dict) else None for c in contexts]
    given = chunk["event_id"] if "event_id" in chunk else pd.Series(pd.NA, index=chunk.index, dtype="string")
    frame["event_id"] = given.astype("string")
    missing = frame["event_id"].isna()
    if missing.any():
        frame.loc[missing, "event_id"] = deterministic_event_ids(frame[missing], source)
    return frame[list(INTERACTION_COLUMNS)]


def load_into_lake(source: GenericSource, lake: Lake) -> int:
    """Interactions and an items snapshot into the lake alone (no catalog or interaction store):
    for offline experiments, tests and benchmarks that need only what Spark and training read."""
    written = sum(lake.write_interactions(chunk.frame) for chunk in source.interaction_chunks())
    items = source.items()
    if items is not None:
        lake.write_snapshot("items", items.assign(tags=items["tags"].map(lambda t: t if t is not None else [])))
    return written
