"""Exclusions in Redis (`services`): a set `not_interested:{user_id}` of item ids."""

from __future__ import annotations

from recsys.settings import RedisSettings
from recsys.stores.exclusions import ExclusionStore
from recsys.stores.redis_client import fail_fast_client

KEY = "not_interested:{}"


class RedisExclusionStore(ExclusionStore):
    def __init__(self, settings: RedisSettings, timeout_seconds: float = 0.25) -> None:
        self._client = fail_fast_client(settings, timeout_seconds)

    def add(self, user_id: str, item_id: str) -> None:
        self._client.sadd(KEY.format(user_id), item_id)

    def items(self, user_id: str) -> set[str]:
        return {m.decode() for m in self._client.smembers(KEY.format(user_id))}  # type: ignore[union-attr]

    def close(self) -> None:
        self._client.close()
