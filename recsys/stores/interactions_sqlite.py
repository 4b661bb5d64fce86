"""Interaction store on an SQLite file: the `local` profile, same keys as the Cassandra tables."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from importlib import resources
from pathlib import Path

import pandas as pd

from recsys.events import context_to_json
from recsys.stores.interactions import (
    Bucket,
    InteractionStore,
    context_with_value,
    from_millis,
    item_frame,
    split_value,
    time_buckets,
    to_millis,
    user_frame,
)


class SqliteInteractionStore(InteractionStore):
    def __init__(self, path: Path, bucket: Bucket = "month") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self.bucket = bucket

    def migrate(self) -> None:
        script = resources.files("recsys.migrations").joinpath("sqlite_interactions.sql").read_text()
        self._db.executescript(script)

    def write(self, events: pd.DataFrame) -> int:
        millis = to_millis(events["event_time"])
        buckets = time_buckets(events["event_time"], self.bucket)
        contexts = [
            json.dumps(context_with_value(c, v), sort_keys=True)
            for c, v in zip(events["context"], events["value"])
        ]
        sessions = events["session_id"].astype(object).where(events["session_id"].notna(), None)
        by_user = zip(events["user_id"], millis.tolist(), events["event_id"], events["item_id"],
                      events["action_type"], contexts, sessions)
        by_item = zip(events["item_id"], buckets.tolist(), millis.tolist(), events["event_id"],
                      events["user_id"], events["action_type"])
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO interactions VALUES (?, ?, ?, ?, ?, ?, ?)", by_user)
            self._db.executemany("INSERT OR REPLACE INTO item_interactions VALUES (?, ?, ?, ?, ?, ?)", by_item)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return len(events)

    def user_events(self, user_id: str, limit: int = 100, since: datetime | None = None) -> pd.DataFrame:
        floor = -(2**62) if since is None else int(pd.Timestamp(since).timestamp() * 1000)
        rows = self._db.execute(
            "SELECT event_id, user_id, item_id, event_time, action_type, context, session_id "
            "FROM interactions WHERE user_id = ? AND event_time >= ? "
            "ORDER BY event_time DESC, event_id ASC LIMIT ?",
            (user_id, floor, limit),
        ).fetchall()
        records = []
        for event_id, uid, item_id, millis, action, context, session in rows:
            value, rest = split_value(json.loads(context) if context else {})
            records.append({
                "event_id": event_id, "user_id": uid, "item_id": item_id,
                "event_time": from_millis(millis), "action_type": action, "value": value,
                "session_id": session, "context": context_to_json(rest),
            })
        return user_frame(records)

    def recent_items(self, user_id: str, limit: int = 100) -> list[str]:
        rows = self._db.execute(
            "SELECT item_id FROM interactions WHERE user_id = ? ORDER BY event_time DESC, event_id ASC LIMIT ?",
            (user_id, limit),
        ).fetchall()
        return [row[0] for row in rows]

    def item_events(self, item_id: str, since: datetime, until: datetime) -> pd.DataFrame:
        lo, hi = (int(pd.Timestamp(t).timestamp() * 1000) for t in (since, until))
        first, last = (int(time_buckets(pd.Series([pd.Timestamp(t)]), self.bucket)[0]) for t in (since, until))
        rows = self._db.execute(
            "SELECT event_id, user_id, item_id, event_time, action_type FROM item_interactions "
            "WHERE item_id = ? AND bucket BETWEEN ? AND ? AND event_time BETWEEN ? AND ? "
            "ORDER BY event_time DESC, event_id ASC",
            (item_id, first, last, lo, hi),
        ).fetchall()
        return item_frame([(e, u, i, from_millis(t), a) for e, u, i, t, a in rows])

    def counts(self) -> dict[str, int]:
        return {
            table: self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("interactions", "item_interactions")
        }

    def close(self) -> None:
        self._db.close()
