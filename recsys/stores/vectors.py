"""User embeddings in the online store, in the design's layout.

Redis (`services`): a hash `user_embedding:{user_id}` with `vector` (float32 bytes), `version` and
`updated_at` (ISO 8601). SQLite (`local`): one row per user with the same three fields. One
interface, one contract test for both.
"""

from __future__ import annotations

import sqlite3
from abc import abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from recsys.errors import InvalidInputError
from recsys.settings import RedisSettings
from recsys.stores.base import Store

KEY = "user_embedding:{}"


@dataclass(frozen=True)
class UserVector:
    vector: np.ndarray
    version: str
    updated_at: datetime


class UserVectorStore(Store):
    @abstractmethod
    def put(self, users: list[str], vectors: np.ndarray, version: str, updated_at: datetime) -> int:
        """Write one vector per user (rows of `vectors`); returns how many were written."""

    @abstractmethod
    def get(self, users: list[str]) -> list[UserVector | None]:
        """Each user's vector, or None when the store has none."""




def _check(users: list[str], vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(users):
        raise InvalidInputError(f"need one vector per user: {len(users)} users, vectors of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise InvalidInputError("user vectors must be finite")
    return vectors


class RedisUserVectorStore(UserVectorStore):
    def __init__(self, settings: RedisSettings) -> None:
        import redis

        self._client = redis.Redis(host=settings.host, port=settings.port, db=settings.db)

    def put(self, users: list[str], vectors: np.ndarray, version: str, updated_at: datetime) -> int:
        vectors = _check(users, vectors)
        stamp = updated_at.isoformat()
        with self._client.pipeline(transaction=False) as pipe:
            for user, vector in zip(users, vectors):
                pipe.hset(KEY.format(user), mapping={"vector": vector.tobytes(), "version": version,
                                                     "updated_at": stamp})
            pipe.execute()
        return len(users)

    def get(self, users: list[str]) -> list[UserVector | None]:
        with self._client.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.hmget(KEY.format(user), ["vector", "version", "updated_at"])
            rows = pipe.execute()
        return [
            None if raw is None else UserVector(np.frombuffer(raw, dtype=np.float32).copy(), version.decode(),
                                                datetime.fromisoformat(stamp.decode()))
            for raw, version, stamp in rows
        ]

    def close(self) -> None:
        self._client.close()


class SqliteUserVectorStore(UserVectorStore):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS user_embedding (user_id TEXT PRIMARY KEY, vector BLOB NOT NULL, "
            "version TEXT NOT NULL, updated_at TEXT NOT NULL)"
        )

    def put(self, users: list[str], vectors: np.ndarray, version: str, updated_at: datetime) -> int:
        vectors = _check(users, vectors)
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
