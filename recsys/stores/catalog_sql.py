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

from recsys.stores.catalog import ITEM_COLUMNS, USER_COLUMNS, CatalogStore, Recommendation, on_conflict

COUNTED = ("users", "items", "precomputed_recommendations")


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
