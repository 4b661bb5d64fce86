"""Layer 1: precomputed top-N per user, written by the batch job, read before any model runs.

One interface, one implementation per backend: Redis (`precomputed:{user_id}`, a JSON list with the
key's TTL) for `services`, and the catalog's `precomputed_recommendations` table, which both
profiles keep as the durable copy and which is `local`'s layer 1 itself. Reads go through the
layers in order, so a stopped Redis still finds the table.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from recsys.settings import RedisSettings, Settings
from recsys.stores import CatalogStore
from recsys.stores.base import Store
from recsys.stores.catalog import Recommendation

KEY = "precomputed:{}"
KIND = "top_n"
#: Explanation type of each candidate source, and back: the layer stores only the explanation.
EXPLANATIONS = {
    "collaborative": "similar_users", "similar_items": "similar_items", "content": "similar_items",
    "popularity": "popular_in_category", "trending": "trending",
}
#: The table keeps only the explanation: item-to-item and content items both read back as `content`.
SOURCES = {explanation: source for source, explanation in EXPLANATIONS.items()} | {"popular": "popularity"}


def source_of(explanation: str | None) -> str:
    return SOURCES.get(explanation or "", "popularity")


class PrecomputedStore(Store):
    """Each user's precomputed list, best first, until it expires."""

    ttl_seconds: int

    @abstractmethod
    def put_many(self, lists: Mapping[str, list[Recommendation]], computed_at: datetime) -> int:
        """Replace each user's list; they expire `ttl_seconds` after `computed_at`. Returns users written."""

    @abstractmethod
    def get(self, user_id: str, now: datetime | None = None) -> list[Recommendation]:
        """The user's unexpired list, best first; empty when there is none."""


class RedisPrecomputedStore(PrecomputedStore):
    def __init__(self, settings: RedisSettings, ttl_seconds: int, timeout_seconds: float = 0.25) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.ttl_seconds = ttl_seconds
        self._client = redis.Redis(host=settings.host, port=settings.port, db=settings.db,
                                   socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                                   retry=Retry(NoBackoff(), 0))  # redis-py retries ~9 s by default when down

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


class CatalogPrecomputedStore(PrecomputedStore):
    """The catalog's `precomputed_recommendations` rows of kind `top_n`."""

    def __init__(self, catalog: Callable[[], CatalogStore], ttl_seconds: int) -> None:
        self._catalog, self.ttl_seconds = catalog, ttl_seconds

    def put_many(self, lists: Mapping[str, list[Recommendation]], computed_at: datetime) -> int:
        expires = computed_at + timedelta(seconds=self.ttl_seconds)
        catalog = self._catalog()
        for user_id, items in lists.items():
            catalog.put_recommendations(user_id, KIND, items, computed_at, expires)
        return len(lists)

    def get(self, user_id: str, now: datetime | None = None) -> list[Recommendation]:
        return self._catalog().get_recommendations(user_id, KIND, now or datetime.now(UTC))

    def close(self) -> None:
        """Nothing to release: the catalog connection belongs to whoever passed it in."""


def open_precomputed(settings: Settings, catalog: Callable[[], CatalogStore]) -> list[PrecomputedStore]:
    """The layers in read order: Redis then the table in `services`; the table alone in `local`."""
    ttl = settings.serving.precomputed_ttl_seconds
    table = CatalogPrecomputedStore(catalog, ttl)
    if settings.profile == "services":
        return [RedisPrecomputedStore(settings.redis, ttl), table]
    return [table]
