"""Activity logs in Redis (`services`): one JSON value `{prefix}:{user_id}` per user, expiring a day after its
last write. One consumer member owns a user at a time (the topic is keyed by user), so read-merge-write
per batch needs no lock; a redelivery after a rebalance merges by event_id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from recsys.settings import RedisSettings
from recsys.stores.activity import KEEP_MS, Activity, ActivityStore, dumps, loads, merge
from recsys.stores.redis_client import fail_fast_client


class RedisActivityStore(ActivityStore):
    def __init__(self, settings: RedisSettings, prefix: str, timeout_seconds: float = 0.25) -> None:
        self.prefix = prefix
        self._client = fail_fast_client(settings, timeout_seconds)

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}:{user_id}"

    def append(self, events: Mapping[str, Sequence[Activity]]) -> dict[str, list[Activity]]:
        users = list(events)
        if not users:
            return {}
        old = self._client.mget([self._key(u) for u in users])
        logs = {u: merge(loads(text), events[u]) for u, text in zip(users, old)}  # type: ignore[arg-type]
        with self._client.pipeline(transaction=False) as pipe:
            for user, log in logs.items():
                pipe.set(self._key(user), dumps(log), px=KEEP_MS)
            pipe.execute()
        return logs

    def recent(self, user_id: str) -> list[Activity]:
        return loads(self._client.get(self._key(user_id)))  # type: ignore[arg-type]

    def close(self) -> None:
        self._client.close()
