"""Precomputed lists in the catalog's `precomputed_recommendations` table (both profiles' durable copy)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from recsys.stores.catalog import CatalogStore, Recommendation
from recsys.stores.precomputed import KIND, PrecomputedStore


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
