"""User vectors in an SQLite file (`local`): one row per user with the same three fields as the Redis hash."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import numpy as np

from recsys.stores.vectors import UserVector, UserVectorStore, check_vectors


class SqliteUserVectorStore(UserVectorStore):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS user_embedding (user_id TEXT PRIMARY KEY, vector BLOB NOT NULL, "
            "version TEXT NOT NULL, updated_at TEXT NOT NULL)"
        )

    def put(self, users: list[str], vectors: np.ndarray, version: str, updated_at: datetime) -> int:
        vectors = check_vectors(users, vectors)
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO user_embedding VALUES (?, ?, ?, ?)",
                [(u, v.tobytes(), version, updated_at.isoformat()) for u, v in zip(users, vectors)],
            )
        return len(users)

    def get(self, users: list[str]) -> list[UserVector | None]:
        found: dict[str, UserVector] = {}
        for start in range(0, len(users), 500):
            part = users[start:start + 500]
            rows = self._db.execute(
                f"SELECT user_id, vector, version, updated_at FROM user_embedding WHERE user_id IN "
                f"({', '.join('?' * len(part))})", part,
            )
            for user, raw, version, stamp in rows:
                found[user] = UserVector(np.frombuffer(raw, dtype=np.float32).copy(), version,
                                         datetime.fromisoformat(stamp))
        return [found.get(u) for u in users]

    def close(self) -> None:
        self._db.close()
