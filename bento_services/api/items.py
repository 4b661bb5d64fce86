"""The items an admin posts: `POST /items` upserts one item into the catalog, synchronously.

Serving reads the catalog's new and changed items in the background (the pipeline's new-items watch,
`RecommendationPipeline.pick_up_items`) and places a new one by its content, without retraining; nothing here
talks to the serving tables, so every API worker and replica sees the item the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bento_services.api.directory import CatalogUnavailableError
from bento_services.pipeline.connections import Connection
from recsys.backends import open_catalog
from recsys.settings import Settings
from recsys.stores import CatalogStore
from recsys.stores.catalog import IncompleteItemError

log = logging.getLogger(__name__)


class ItemCatalog(Protocol):
    def upsert(self, item_id: str, *, title: str | None, description: str | None, category: str | None,
               subcategory: str | None, tags: Sequence[str] | None, content_features: Mapping[str, Any] | None,
               is_active: bool | None) -> tuple[dict[str, Any], bool]:
        """Create or update the item (None keeps the stored value); the stored row and whether it is new.

        Raises IncompleteItemError for a new item without a title, CatalogUnavailableError when the write did
        not happen.
        """
        ...

    def close(self) -> None: ...


class CatalogItems:
    """`ItemCatalog` over the catalog, one connection per thread."""

    def __init__(self, settings: Settings) -> None:
        self._catalog: Connection[CatalogStore] = Connection("catalog", lambda: open_catalog(settings))

    def upsert(self, item_id: str, *, title: str | None, description: str | None, category: str | None,
               subcategory: str | None, tags: Sequence[str] | None, content_features: Mapping[str, Any] | None,
               is_active: bool | None) -> tuple[dict[str, Any], bool]:
        def write(catalog: CatalogStore) -> tuple[dict[str, Any], bool] | IncompleteItemError:
            try:
                return catalog.upsert_item(item_id, title=title, description=description, category=category,
                                           subcategory=subcategory, tags=tags, content_features=content_features,
                                           is_active=is_active)
            except IncompleteItemError as refused:  # the client's mistake: not a reason to drop the connection
                return refused

        try:
            result = self._catalog.call(write)
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises, the item was not written
            log.warning("catalog did not take item %s: %r", item_id, exc)
            retry = max(1, round(self._catalog.retry_seconds))
            raise CatalogUnavailableError(f"the catalog is unavailable; item {item_id!r} was not written: retry in "
                                          f"{retry} s", retry_after_seconds=retry) from exc
        if isinstance(result, IncompleteItemError):
            raise result
        return result

    def close(self) -> None:
        self._catalog.close()
