"""Catalog store on PostgreSQL: the `services` profile."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from typing import Any

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from recsys.errors import StoreUnavailableError
from recsys.settings import PostgresSettings
from recsys.stores.catalog import (
    ITEM_COLUMNS,
    ITEM_METADATA_COLUMNS,
    ITEM_STATS_FRAME,
    ITEM_UPDATE_COLUMNS,
    USER_COLUMNS,
    USER_UPDATE_COLUMNS,
    CatalogStore,
    Recommendation,
    frame_rows,
    on_conflict,
)


class PostgresCatalogStore(CatalogStore):
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
                self._upsert("items", "item_id", items, ITEM_METADATA_COLUMNS, ITEM_UPDATE_COLUMNS)
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
                copy.write_row([Jsonb(v) if isinstance(v, dict) else v for v in row])
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

    def item_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT item_id FROM items")}

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        return self._get("items", "item_id", item_id, ITEM_COLUMNS)

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        return self._get("users", "user_id", user_id, USER_COLUMNS)

    def _get(self, table: str, key: str, value: str, columns: tuple[str, ...]) -> dict[str, Any] | None:
        row = self._db.execute(
            f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = %s", (value,)
        ).fetchone()
        if row is None:
            return None
        record = dict(zip(columns, row))
        if record.get("avg_rating") is not None:
            record["avg_rating"] = float(record["avg_rating"])
        return record

    def counts(self) -> dict[str, int]:
        return {
            table: self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("users", "items", "precomputed_recommendations")
        }

    def put_recommendations(
        self, user_id: str, kind: str, recommendations: list[Recommendation],
        computed_at: datetime, expires_at: datetime,
    ) -> None:
        with self._db.transaction():
            self._db.execute(
                "DELETE FROM precomputed_recommendations WHERE user_id = %s AND recommendation_type = %s",
                (user_id, kind),
            )
            self._db.cursor().executemany(
                "INSERT INTO precomputed_recommendations VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (user_id, kind, r.item_id, r.rank, r.score, r.explanation_type, computed_at, expires_at)
                    for r in recommendations
                ],
            )

    def get_recommendations(self, user_id: str, kind: str, now: datetime) -> list[Recommendation]:
        rows = self._db.execute(
            "SELECT item_id, rank, score, explanation_type FROM precomputed_recommendations "
            "WHERE user_id = %s AND recommendation_type = %s AND expires_at > %s ORDER BY rank",
            (user_id, kind, now),
        ).fetchall()
        return [Recommendation(*row) for row in rows]

    def close(self) -> None:
        self._db.close()
