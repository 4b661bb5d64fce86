"""Activity logs in an SQLite file (`local`): one row per (prefix, user) holding the JSON log."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from recsys.stores.activity import Activity, ActivityStore, dumps, loads, merge


class SqliteActivityStore(ActivityStore):
    def __init__(self, path: Path, prefix: str) -> None:
        self.prefix = prefix
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS activity (prefix TEXT NOT NULL, user_id TEXT NOT NULL, "
                         "log TEXT NOT NULL, PRIMARY KEY (prefix, user_id))")

    def append(self, events: Mapping[str, Sequence[Activity]]) -> dict[str, list[Activity]]:
        logs: dict[str, list[Activity]] = {}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for user, new in events.items():
                    logs[user] = merge(self._read(user), new)
                    self._db.execute("INSERT OR REPLACE INTO activity VALUES (?, ?, ?)",
                                     (self.prefix, user, dumps(logs[user])))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return logs

    def _read(self, user_id: str) -> list[Activity]:
        row = self._db.execute("SELECT log FROM activity WHERE prefix = ? AND user_id = ?",
                               (self.prefix, user_id)).fetchone()
        return loads(row[0] if row else None)

    def recent(self, user_id: str) -> list[Activity]:
        with self._lock:
            return self._read(user_id)

    def close(self) -> None:
        self._db.close()
