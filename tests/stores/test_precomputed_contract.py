"""Layer 1: one contract, run against every backend (the catalog table in both profiles, Redis in services)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from recsys.backends import open_precomputed
from recsys.settings import Settings
from recsys.stores import CatalogStore
from recsys.stores.catalog import Recommendation
from recsys.stores.precomputed import PrecomputedStore, source_of

TTL = 3600


@pytest.fixture
def layers(settings: Settings, catalog: CatalogStore) -> Iterator[list[PrecomputedStore]]:
    tuned = settings.model_copy(update={"serving": settings.serving.model_copy(
        update={"precomputed_ttl_seconds": TTL})})
    stores = open_precomputed(tuned, lambda: catalog)
    yield stores
    for store in stores:
        store.close()


def top(n: int, prefix: str = "i") -> list[Recommendation]:
    return [Recommendation(f"{prefix}{k}", k + 1, 1.0 - k / 10, "similar_users") for k in range(n)]


def test_layers_per_profile(layers: list[PrecomputedStore], settings: Settings) -> None:
    names = [type(store).__name__ for store in layers]
    expected = ["RedisPrecomputedStore", "CatalogPrecomputedStore"] if settings.profile == "services" else [
        "CatalogPrecomputedStore"]
    assert names == expected


def test_put_get_replace_and_expire(layers: list[PrecomputedStore]) -> None:
    for store in layers:
        user, other = f"u-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
        now = datetime.now(UTC)
        assert store.put_many({user: top(5)}, now) == 1
        assert store.get(user) == top(5)
        assert store.get(other) == []
        store.put_many({user: top(2, "j")}, now)
        assert store.get(user) == top(2, "j")  # replaced, not merged
        store.put_many({other: top(3)}, now - timedelta(seconds=TTL + 60))
        assert store.get(other) == []  # written already expired


def test_explanations_map_back_to_sources() -> None:
    assert source_of("similar_users") == "collaborative"
    assert source_of("similar_items") == "content"
    assert source_of("popular_in_category") == "popularity"
    assert source_of("trending") == "trending"
    assert source_of(None) == "popularity"
