"""The one place the profile picks the backends: every store, the event bus and the feature store's
configuration. Everything else takes the interface and never asks which profile it runs under.

| interface | `local` (embedded) | `services` (real servers) |
|---|---|---|
| `CatalogStore` | `catalog_sqlite` | `catalog_postgres` |
| `InteractionStore` | `interactions_sqlite` | `interactions_cassandra` |
| `UserVectorStore` | `vectors_sqlite` | `vectors_redis` |
| `ExclusionStore` | `exclusions_sqlite` | `exclusions_redis` |
| `ActivityStore` (sessions, real-time features) | `activity_sqlite` | `activity_redis` |
| `PrecomputedStore` layers | `precomputed_catalog` | `precomputed_redis`, then `precomputed_catalog` |
| `EventBus` | `in_process` (the consumers subscribed) | `kafka` (the consumers: `recsys consume`) |
| Feast `feature_store.yaml` | `feature_repo/feature_store.yaml` | `infra/feast/feature_store.yaml` + addresses |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recsys.bus import EventBus, Outcome
from recsys.bus.base import ignore_outcome
from recsys.settings import Settings
from recsys.stores.activity import ActivityStore
from recsys.stores.catalog import CatalogStore
from recsys.stores.exclusions import ExclusionStore
from recsys.stores.interactions import InteractionStore
from recsys.stores.lake import Lake
from recsys.stores.precomputed import PrecomputedStore
from recsys.stores.vectors import UserVectorStore
from recsys.streaming.consumers import Consumer


def _services(settings: Settings) -> bool:
    return settings.profile == "services"


def open_catalog(settings: Settings) -> CatalogStore:
    if _services(settings):
        from recsys.stores.catalog_postgres import PostgresCatalogStore

        return PostgresCatalogStore(settings.postgres)
    from recsys.stores.catalog_sqlite import SqliteCatalogStore

    return SqliteCatalogStore(settings.embedded_path / "catalog.sqlite")


def open_interactions(settings: Settings) -> InteractionStore:
    if _services(settings):
        from recsys.stores.interactions_cassandra import CassandraInteractionStore

        return CassandraInteractionStore(settings.cassandra)
    from recsys.stores.interactions_sqlite import SqliteInteractionStore

    return SqliteInteractionStore(settings.embedded_path / "interactions.sqlite", settings.cassandra.item_bucket)


def open_user_vectors(settings: Settings) -> UserVectorStore:
    if _services(settings):
        from recsys.stores.vectors_redis import RedisUserVectorStore

        return RedisUserVectorStore(settings.redis)
    from recsys.stores.vectors_sqlite import SqliteUserVectorStore

    return SqliteUserVectorStore(settings.embedded_path / "user_vectors.sqlite")


def open_exclusions(settings: Settings) -> ExclusionStore:
    if _services(settings):
        from recsys.stores.exclusions_redis import RedisExclusionStore

        return RedisExclusionStore(settings.redis)
    from recsys.stores.exclusions_sqlite import SqliteExclusionStore

    return SqliteExclusionStore(settings.embedded_path / "serving.sqlite")


def open_activity(settings: Settings, prefix: str) -> ActivityStore:
    """A consumer's per-user activity log: `session` (the session aggregator) or `recent` (the feature updater)."""
    if _services(settings):
        from recsys.stores.activity_redis import RedisActivityStore

        return RedisActivityStore(settings.redis, prefix)
    from recsys.stores.activity_sqlite import SqliteActivityStore

    return SqliteActivityStore(settings.embedded_path / "activity.sqlite", prefix)


#: Every consumer of `interaction-events`, by the name `recsys consume` takes (its group is prefix + name).
EVENT_CONSUMERS = ("store-writer", "lake-writer", "sessions", "users", "features")
#: Every consumer `recsys consume` runs: those of the events, and `serving-log` (the `serving-log` topic to the
#: lake; in `local` the API writes its log to the lake itself).
CONSUMERS = (*EVENT_CONSUMERS, "serving-log")


def open_consumer(settings: Settings, name: str) -> Consumer:
    from recsys.streaming.consumers import LakeWriter, SessionAggregator, StoreWriter

    if name == "store-writer":
        return StoreWriter(lambda: open_interactions(settings))
    if name == "serving-log":
        from recsys.streaming.serving_log import ServingLogWriter

        return ServingLogWriter(settings.lake_path, settings.monitoring.serving_log_topic)
    if name == "lake-writer":
        return LakeWriter(open_lake(settings))
    if name == "sessions":
        return SessionAggregator(lambda: open_activity(settings, "session"))
    if name == "users":
        from recsys.streaming.users import UserRegistrar

        return UserRegistrar(lambda: open_catalog(settings))
    if name == "features":
        from recsys.features.store import open_feature_store
        from recsys.streaming.features import FeatureUpdater, item_categories

        gap_ms = int(settings.streaming.session_gap_minutes * 60_000)
        return FeatureUpdater(lambda: open_activity(settings, "recent"), lambda: open_feature_store(settings),
                              lambda: item_categories(open_lake(settings)), gap_ms)
    raise ValueError(f"unknown consumer {name!r}; expected one of {', '.join(CONSUMERS)}")


def open_precomputed(settings: Settings, catalog: Callable[[], CatalogStore]) -> list[PrecomputedStore]:
    """The layers in read order: Redis then the table in `services`; the table alone in `local`."""
    from recsys.stores.precomputed_catalog import CatalogPrecomputedStore

    ttl = settings.serving.precomputed_ttl_seconds
    table = CatalogPrecomputedStore(catalog, ttl)
    if _services(settings):
        from recsys.stores.precomputed_redis import RedisPrecomputedStore

        return [RedisPrecomputedStore(settings.redis, ttl), table]
    return [table]


def open_lake(settings: Settings) -> Lake:
    return Lake(settings.lake_path)


def open_bus(settings: Settings, outcome: Outcome = ignore_outcome) -> EventBus:
    """Kafka for `services`; for `local`, the in-process bus running every consumer before `publish` returns."""
    serving = settings.serving
    if _services(settings):
        from recsys.bus.kafka import KafkaBus

        return KafkaBus(settings.kafka, serving.publish_retries, serving.publish_timeout_ms, outcome)
    from recsys.bus.in_process import InProcessBus
    from recsys.features.realtime import PUSH_SOURCE
    from recsys.features.store import registered

    bus = InProcessBus(serving.publish_retries, serving.publish_timeout_ms, outcome)
    for name in EVENT_CONSUMERS:
        # The feature updater needs an applied feature repository (`recsys feast-apply`); without one there
        # is no online store to update.
        if name != "features" or registered(settings, PUSH_SOURCE):
            bus.attach(open_consumer(settings, name))
    return bus


def feature_store_yaml(settings: Settings) -> Path:
    """The profile's `feature_store.yaml`; `recsys.features.store` fills in the settings' addresses."""
    if _services(settings):
        return Path(settings.features.services_yaml)
    return settings.features.repo_path / "feature_store.yaml"
