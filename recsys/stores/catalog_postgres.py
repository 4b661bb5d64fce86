"""Catalog store on PostgreSQL: the `services` profile."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from importlib import resources
from typing import Any

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from recsys.errors import StoreUnavailableError
from recsys.settings import PostgresSettings
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


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_plain)


class PostgresCatalogStore(SqlCatalogStore):
    placeholder = "%s"

    def __init__(self, settings: PostgresSettings) -> None:
        try:
            self._db = psycopg.connect(settings.conninfo(), autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"PostgreSQL at {settings.host}:{settings.port} did not answer: {exc}"
            ) from exc

    def migrate(self) -> None:
        script = resources.files("recsys.migrations").joinpath("postgres.sql").read_text()
        with self._db.transaction():
            self._db.execute(script)

    def write(
        self,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        item_stats: pd.DataFrame | None = None,
    ) -> None:
        with self._db.transaction():
            if items is not None:
                self._upsert("items", "item_id", stamped(items), ITEM_METADATA_COLUMNS, ITEM_UPDATE_COLUMNS)
            if users is not None:
                self._upsert("users", "user_id", users, USER_COLUMNS, USER_UPDATE_COLUMNS)
            if item_stats is not None:
                self._update_stats(item_stats)

    def _upsert(
        self, table: str, key: str, frame: pd.DataFrame, columns: tuple[str, ...], updates: tuple[str, ...]
    ) -> None:
        # Only the frame's own columns: the others keep their defaults on insert and their values on update.
        columns = tuple(c for c in columns if c in frame.columns)
        updates = tuple(c for c in updates if c in frame.columns)
        """COPY into a staging table, then one INSERT … ON CONFLICT: fast and all-or-nothing."""
        stage = f"{table}_stage"
        cols = ", ".join(columns)
        self._db.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with self._db.cursor().copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
            for row in frame_rows(frame, columns):
                copy.write_row([Jsonb(v, dumps=_dumps) if isinstance(v, dict) else v for v in row])
        self._db.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} "
            + on_conflict(table, key, updates)
        )

    def _update_stats(self, stats: pd.DataFrame) -> None:
        self._db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS item_stats_stage (item_id VARCHAR(50), view_count BIGINT, "
            "interaction_count BIGINT, avg_rating DECIMAL(3, 2), first_seen TIMESTAMPTZ) ON COMMIT DELETE ROWS"
        )
        with self._db.cursor().copy(f"COPY item_stats_stage ({', '.join(ITEM_STATS_FRAME)}) FROM STDIN") as copy:
            for row in frame_rows(stats, ITEM_STATS_FRAME):
                copy.write_row(row)
        self._db.execute(
            "UPDATE items i SET view_count = s.view_count, interaction_count = s.interaction_count, "
            "avg_rating = s.avg_rating, created_at = COALESCE(i.created_at, s.first_seen) "
            "FROM item_stats_stage s WHERE i.item_id = s.item_id"
        )

    def _transaction(self) -> AbstractContextManager[Any]:
        return self._db.transaction()

    def _to_db(self, column: str, value: Any) -> Any:
        return Jsonb(value, dumps=_dumps) if isinstance(value, dict) else value

    def _from_db(self, column: str, value: Any) -> Any:
        return float(value) if column == "avg_rating" and value is not None else value  # NUMERIC comes as Decimal
