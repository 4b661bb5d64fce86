""""Not interested" feedback: items a user asked never to see again, kept across restarts.

Redis (`services`): a set `not_interested:{user_id}`. SQLite (`local`): one row per (user, item) in
`data_dir/embedded/serving.sqlite`. One interface, one contract test for both.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import abstractmethod
from pathlib import Path

from recsys.settings import RedisSettings, Settings
from recsys.stores.base import Store

KEY = "not_interested:{}"


class ExclusionStore(Store):
    @abstractmethod
    def add(self, user_id: str, item_id: str) -> None:
        """Exclude the item for this user from now on."""

    @abstractmethod
    def items(self, user_id: str) -> set[str]:
        """Every item the user excluded."""


class RedisExclusionStore(ExclusionStore):
    def __init__(self, settings: RedisSettings, timeout_seconds: float = 0.25) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._client = redis.Redis(host=settings.host, port=settings.port, db=settings.db,
                                   socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                                   retry=Retry(NoBackoff(), 0))  # redis-py retries ~9 s by default when down

    def add(self, user_id: str, item_id: str) -> None:
        self._client.sadd(KEY.format(user_id), item_id)

    def items(self, user_id: str) -> set[str]:
        return {m.decode() for m in self._client.smembers(KEY.format(user_id))}  # type: ignore[union-attr]

    def close(self) -> None:
        self._client.close()


class SqliteExclusionStore(ExclusionStore):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS not_interested (user_id TEXT NOT NULL, item_id TEXT NOT NULL, "
                         "PRIMARY KEY (user_id, item_id))")

    def add(self, user_id: str, item_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO not_interested VALUES (?, ?)", (user_id, item_id))

    def items(self, user_id: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT item_id FROM not_interested WHERE user_id = ?", (user_id,)).fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        self._db.close()


def open_exclusions(settings: Settings) -> ExclusionStore:
    if settings.profile == "services":
        return RedisExclusionStore(settings.redis)
    return SqliteExclusionStore(settings.embedded_path / "serving.sqlite")
