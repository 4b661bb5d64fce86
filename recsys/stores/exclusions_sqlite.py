"""Exclusions in an SQLite file (`local`): one row per (user, item)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from recsys.stores.exclusions import ExclusionStore


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
