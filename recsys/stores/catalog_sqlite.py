"""Catalog store on an SQLite file: the `local` profile."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.stores.catalog import (
    ITEM_METADATA_COLUMNS,
    ITEM_STATS_FRAME,
    ITEM_UPDATE_COLUMNS,
    USER_COLUMNS,
    USER_UPDATE_COLUMNS,
    frame_rows,
    json_plain,
    on_conflict,
)
from recsys.stores.catalog_sql import SqlCatalogStore, stamped

_JSON_COLUMNS = {"tags", "content_features", "preferred_categories"}
_BOOL_COLUMNS = {"is_active", "is_new_item", "is_new_user", "onboarding_completed"}
_TIME_COLUMNS = {"created_at", "updated_at", "last_active_at", "computed_at", "expires_at", "first_seen"}


def _to_db(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _JSON_COLUMNS:
        return json.dumps(list(value) if not isinstance(value, dict) else value, sort_keys=True, default=json_plain)
    if column in _TIME_COLUMNS:
        return _iso(value)
    if column in _BOOL_COLUMNS:
        return int(bool(value))
    return value


def _from_db(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _JSON_COLUMNS:
        return json.loads(value)
    if column in _TIME_COLUMNS:
        return datetime.fromisoformat(value)
    if column in _BOOL_COLUMNS:
        return bool(value)
    return value


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class SqliteCatalogStore(SqlCatalogStore):
    placeholder = "?"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")

    def migrate(self) -> None:
        script = resources.files("recsys.migrations").joinpath("sqlite_catalog.sql").read_text()
        self._db.executescript(script)

    def write(
        self,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        item_stats: pd.DataFrame | None = None,
    ) -> None:
        with self._transaction():
            if items is not None:
                self._upsert("items", "item_id", stamped(items), ITEM_METADATA_COLUMNS, ITEM_UPDATE_COLUMNS)
            if users is not None:
                self._upsert("users", "user_id", users, USER_COLUMNS, USER_UPDATE_COLUMNS)
            if item_stats is not None:
                self._db.executemany(
                    "UPDATE items SET view_count = ?, interaction_count = ?, avg_rating = ?, "
                    "created_at = COALESCE(created_at, ?) WHERE item_id = ?",
                    [(*(_to_db(c, v) for c, v in zip(ITEM_STATS_FRAME[1:], row[1:])), row[0])
                     for row in frame_rows(item_stats, ITEM_STATS_FRAME)],
                )

    def _upsert(
        self, table: str, key: str, frame: pd.DataFrame, columns: tuple[str, ...], updates: tuple[str, ...]
    ) -> None:
        # Only the frame's own columns: the others keep their defaults on insert and their values on update.
        columns = tuple(c for c in columns if c in frame.columns)
        updates = tuple(c for c in updates if c in frame.columns)
        rows = [
            tuple(_to_db(c, v) for c, v in zip(columns, row)) for row in frame_rows(frame, columns)
        ]
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            + on_conflict(table, key, updates)
        )
        self._db.executemany(sql, rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _to_db(self, column: str, value: Any) -> Any:
        return _to_db(column, value)

    def _from_db(self, column: str, value: Any) -> Any:
        return _from_db(column, value)
