"""Store adapters, chosen by the settings' profile in this one place.

Everything above this module takes a ``CatalogStore``, ``InteractionStore`` or ``Lake`` and never
asks which profile it runs under.
"""

from __future__ import annotations

from recsys.settings import Settings
from recsys.stores.catalog import CatalogStore
from recsys.stores.interactions import InteractionStore
from recsys.stores.lake import Lake
from recsys.stores.vectors import RedisUserVectorStore, SqliteUserVectorStore, UserVectorStore


def open_catalog(settings: Settings) -> CatalogStore:
    if settings.profile == "services":
        from recsys.stores.catalog_postgres import PostgresCatalogStore

        return PostgresCatalogStore(settings.postgres)
    from recsys.stores.catalog_sqlite import SqliteCatalogStore

    return SqliteCatalogStore(settings.embedded_path / "catalog.sqlite")


def open_interactions(settings: Settings) -> InteractionStore:
    if settings.profile == "services":
        from recsys.stores.interactions_cassandra import CassandraInteractionStore

        return CassandraInteractionStore(settings.cassandra)
    from recsys.stores.interactions_sqlite import SqliteInteractionStore

    return SqliteInteractionStore(settings.embedded_path / "interactions.sqlite", settings.cassandra.item_bucket)


def open_user_vectors(settings: Settings) -> UserVectorStore:
    if settings.profile == "services":
        return RedisUserVectorStore(settings.redis)
    return SqliteUserVectorStore(settings.embedded_path / "user_vectors.sqlite")


def open_lake(settings: Settings) -> Lake:
    return Lake(settings.lake_path)


__all__ = [
    "CatalogStore", "InteractionStore", "Lake", "UserVectorStore", "open_catalog", "open_interactions", "open_lake",
    "open_user_vectors",
]
