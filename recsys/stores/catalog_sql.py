"""What the two SQL catalog backends share: the reads and the precomputed lists, in SQL both accept.

A backend gives its connection (DB-API: `execute`, `cursor`), its parameter placeholder, how a
value goes in and comes out (`_to_db`, `_from_db`) and a transaction; the statements are written once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from recsys.stores.catalog import (
    ITEM_COLUMNS,
    USER_COLUMNS,
    CatalogStore,
    IncompleteItemError,
    Recommendation,
    on_conflict,
)

COUNTED = ("users", "items", "precomputed_recommendations")
_ITEM_TIMES = ("created_at", "updated_at")


def stamped(items: pd.DataFrame, now: datetime | None = None) -> pd.DataFrame:
    """The item rows to write, each with `updated_at` = the write time (what `items_changed_since` reads)."""
    return items.assign(updated_at=pd.Timestamp(now or datetime.now(UTC)))


class SqlCatalogStore(CatalogStore):
    _db: Any
    placeholder: str  # "?" (sqlite3) or "%s" (psycopg)

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """All statements inside commit together or not at all."""

    def _to_db(self, column: str, value: Any) -> Any:
        return value

    def _from_db(self, column: str, value: Any) -> Any:
        return value

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    def item_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT item_id FROM items")}

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        return self._get("items", "item_id", item_id, ITEM_COLUMNS)

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        return self._get("users", "user_id", user_id, USER_COLUMNS)

    def upsert_item(
        self, item_id: str, *, title: str | None = None, description: str | None = None,
        category: str | None = None, subcategory: str | None = None, tags: Sequence[str] | None = None,
        content_features: Mapping[str, Any] | None = None, is_active: bool | None = None,
    ) -> tuple[dict[str, Any], bool]:
        given: dict[str, Any] = {
            "title": title, "description": description, "category": category, "subcategory": subcategory,
            "tags": None if tags is None else list(tags),
            "content_features": None if content_features is None else dict(content_features), "is_active": is_active,
        }
        given = {c: v for c, v in given.items() if v is not None}
        now = self._to_db("updated_at", datetime.now(UTC))
        values = tuple(self._to_db(c, v) for c, v in given.items())
        with self._transaction():
            created = self.get_item(item_id) is None
            if created:
                if "title" not in given:
                    raise IncompleteItemError(item_id, "title")
                columns = ("item_id", *_ITEM_TIMES, *given)
                self._db.execute(self._sql(  # a concurrent creation of the same id becomes an update
                    f"INSERT INTO items ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                    + on_conflict("items", "item_id", ("updated_at", *given))), (item_id, now, now, *values))
            else:  # an UPDATE: the row's NOT NULL title need not be given again
                assignments = ", ".join(f"{c} = ?" for c in ("updated_at", *given))
                self._db.execute(self._sql(f"UPDATE items SET {assignments} WHERE item_id = ?"),
                                 (now, *values, item_id))
            row = self.get_item(item_id)
        assert row is not None
        return row, created

    def items_changed_since(self, since: datetime | None, columns: Sequence[str] = ITEM_COLUMNS) -> pd.DataFrame:
        unknown = [c for c in columns if c not in ITEM_COLUMNS]
        if unknown:
            raise ValueError(f"unknown item columns {unknown}; expected some of {', '.join(ITEM_COLUMNS)}")
        wanted = ("item_id", *(c for c in columns if c != "item_id"))
        query = f"SELECT {', '.join(wanted)} FROM items"
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE updated_at >= ?"
            params = (self._to_db("updated_at", since),)
        # Rows without updated_at (written before it was kept) first, in both backends.
        rows = self._db.execute(self._sql(query + " ORDER BY updated_at IS NOT NULL, updated_at, item_id"),
                                params).fetchall()
        frame = pd.DataFrame({c: pd.Series([self._from_db(c, row[k]) for row in rows], dtype=object)
                              for k, c in enumerate(wanted)})
        for column in (c for c in wanted if c in _ITEM_TIMES):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def _get(self, table: str, key: str, value: str, columns: tuple[str, ...]) -> dict[str, Any] | None:
        row = self._db.execute(self._sql(f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = ?"),
                               (value,)).fetchone()
        return None if row is None else {c: self._from_db(c, v) for c, v in zip(columns, row)}

    def upsert_user(
        self, user_id: str, *, preferred_categories: Sequence[str] | None = None, language: str | None = None,
        country: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        given: dict[str, Any] = {"preferred_categories": None if preferred_categories is None
                                 else list(preferred_categories), "language": language, "country": country}
        given = {c: v for c, v in given.items() if v is not None} | {"onboarding_completed": True}
        columns = ("user_id", "created_at", *given)
        values = (user_id, self._to_db("created_at", datetime.now(UTC)),
                  *(self._to_db(c, v) for c, v in given.items()))
        insert = (f"INSERT INTO users ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                  + on_conflict("users", "user_id", tuple(given)))
        with self._transaction():
            created = self.get_user(user_id) is None
            self._db.execute(self._sql(insert), values)
            row = self.get_user(user_id)
        assert row is not None
        return row, created

    def register_users(self, seen: Mapping[str, datetime]) -> None:
        if not seen:
            return
        rows = [(user_id, self._to_db("created_at", moment), self._to_db("last_active_at", moment))
                for user_id, moment in sorted(seen.items())]  # one lock order for concurrent writers
        with self._transaction():
            self._db.cursor().executemany(self._sql(
                "INSERT INTO users (user_id, created_at, last_active_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET last_active_at = excluded.last_active_at "
                "WHERE users.last_active_at IS NULL OR users.last_active_at < excluded.last_active_at"), rows)

    def counts(self) -> dict[str, int]:
        return {table: int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) for table in COUNTED}

    def put_recommendations(
        self, user_id: str, kind: str, recommendations: list[Recommendation],
        computed_at: datetime, expires_at: datetime,
    ) -> None:
        computed, expires = self._to_db("computed_at", computed_at), self._to_db("expires_at", expires_at)
        with self._transaction():
            self._db.execute(
                self._sql("DELETE FROM precomputed_recommendations WHERE user_id = ? AND recommendation_type = ?"),
                (user_id, kind),
            )
            self._db.cursor().executemany(  # psycopg's connection has no executemany of its own
                self._sql("INSERT INTO precomputed_recommendations VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                [(user_id, kind, r.item_id, r.rank, r.score, r.explanation_type, computed, expires)
                 for r in recommendations],
            )

    def get_recommendations(self, user_id: str, kind: str, now: datetime) -> list[Recommendation]:
        rows = self._db.execute(self._sql(
            "SELECT item_id, rank, score, explanation_type FROM precomputed_recommendations "
            "WHERE user_id = ? AND recommendation_type = ? AND expires_at > ? ORDER BY rank"),
            (user_id, kind, self._to_db("expires_at", now)),
        ).fetchall()
        return [Recommendation(*row) for row in rows]

    def close(self) -> None:
        self._db.close()
