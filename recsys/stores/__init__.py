"""The store interfaces; one file per backend beside each (`catalog_sqlite`, `catalog_postgres`, ...), chosen
by the profile in `recsys.backends` alone."""

from __future__ import annotations

from recsys.stores.catalog import CatalogStore
from recsys.stores.exclusions import ExclusionStore
from recsys.stores.interactions import InteractionStore
from recsys.stores.lake import Lake
from recsys.stores.precomputed import PrecomputedStore
from recsys.stores.vectors import UserVectorStore

__all__ = ["CatalogStore", "ExclusionStore", "InteractionStore", "Lake", "PrecomputedStore", "UserVectorStore"]
