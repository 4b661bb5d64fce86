"""Precomputed lists in Redis (`services`): `precomputed:{user_id}`, a JSON list, expiring with the list."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from recsys.settings import RedisSettings
from recsys.stores.catalog import Recommendation
from recsys.stores.precomputed import PrecomputedStore
from recsys.stores.redis_client import fail_fast_client

KEY = "precomputed:{}"


class RedisPrecomputedStore(PrecomputedStore):
    def __init__(self, settings: RedisSettings, ttl_seconds: int, timeout_seconds: float = 0.25) -> None:
        self.ttl_seconds = ttl_seconds
        self._client = fail_fast_client(settings, timeout_seconds)

    def put_many(self, lists: Mapping[str, list[Recommendation]], computed_at: datetime) -> int:
        remaining = computed_at + timedelta(seconds=self.ttl_seconds) - datetime.now(UTC)
        seconds = int(remaining.total_seconds())
        with self._client.pipeline(transaction=False) as pipe:
            for user_id, items in lists.items():
                body = json.dumps([[r.item_id, r.rank, r.score, r.explanation_type] for r in items])
                if seconds > 0:
                    pipe.set(KEY.format(user_id), body, ex=seconds)
                else:  # already expired: the old list must not outlive it either
                    pipe.delete(KEY.format(user_id))
            pipe.execute()
        return len(lists)

    def get(self, user_id: str, now: datetime | None = None) -> list[Recommendation]:
        raw: bytes | None = self._client.get(KEY.format(user_id))  # type: ignore[assignment]
        if raw is None:
            return []
        return [Recommendation(str(i), int(rank), float(score), explanation)
                for i, rank, score, explanation in json.loads(raw)]

    def close(self) -> None:
        self._client.close()
