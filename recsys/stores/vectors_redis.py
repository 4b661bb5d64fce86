"""User vectors in Redis (`services`): a hash `user_embedding:{user_id}` with `vector`, `version`, `updated_at`."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from recsys.settings import RedisSettings
from recsys.stores.vectors import UserVector, UserVectorStore, check_vectors

KEY = "user_embedding:{}"


class RedisUserVectorStore(UserVectorStore):
    def __init__(self, settings: RedisSettings) -> None:
        import redis

        self._client = redis.Redis(host=settings.host, port=settings.port, db=settings.db)

    def put(self, users: list[str], vectors: np.ndarray, version: str, updated_at: datetime) -> int:
        vectors = check_vectors(users, vectors)
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
