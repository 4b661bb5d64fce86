"""Keeping the request path's in-memory tables current without stopping it: a re-published candidate
artifact (`models/CURRENT`, `refresh`) and the catalog's new and changed items (`pick_up_items`, placed by
their content vectors without retraining). Every change builds new tables and swaps them in under one lock
(copy-on-write: a request keeps reading the tables it started with).

`TablesUpkeep` is a part of `RecommendationPipeline`, which owns the state it works on.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bento_services.pipeline.connections import Connection
from bento_services.pipeline.postprocess import PostProcessor
from bento_services.pipeline.retrieve import (
    CatalogChange,
    Retriever,
    ServingTables,
    apply_catalog_items,
    current_folder,
    load_serving_tables,
)
from bento_services.pipeline.session import LiveSession
from recsys.settings import Settings
from recsys.stores import CatalogStore

log = logging.getLogger(__name__)
WATCH_SECONDS = 60.0
#: The new-items watch reads again the rows written this long before its last look: a write stamped before
#: the look but committed after it (a long import, a skewed clock) is still seen. Re-reading is harmless.
ITEMS_LOOK_BACK = timedelta(minutes=2)
#: What the new-items watch reads of the catalog's items.
ITEM_WATCH_COLUMNS = ("category", "tags", "is_active", "created_at", "updated_at")


class TablesUpkeep:
    """The swaps of `RecommendationPipeline`'s tables; the attributes are the pipeline's."""

    settings: Settings
    tables: ServingTables
    retriever: Retriever | None
    post: PostProcessor
    live: LiveSession
    catalog: Connection[CatalogStore]
    _stop: threading.Event
    _swap: threading.Lock
    _items_since: datetime | None
    _catalog_items: dict[str, dict[str, Any]]
    _unplaced: dict[str, object]

    def refresh(self, folder: Path | None = None) -> bool:
        """Reload the in-memory tables (a newly published artifact, today's popularity) and swap them in.

        A new artifact that does not load is not swapped in: the tables in use keep serving. Returns
        whether the swap happened.
        """
        tables = load_serving_tables(self.settings, folder or current_folder(self.settings))
        if tables.tables is None and self.tables.tables is not None:
            log.warning("not swapping in candidate tables %s: %s", tables.version, tables.error)
            return False
        serving = self.settings.serving
        retriever = Retriever(tables.tables, serving.nprobe) if tables.tables is not None else None
        with self._swap:
            self._unplaced.clear()
            if retriever is not None and self._catalog_items:  # the catalog's changes since, on top of the artifact
                change = self._apply_items(tables, retriever, pd.DataFrame(list(self._catalog_items.values())))
                tables, retriever = change.tables, change.retriever
            self.post = PostProcessor(tables.attributes, serving)
            self.live = LiveSession(tables.tables.neighbours if tables.tables is not None else None,
                                    self.settings.streaming)
            self.tables, self.retriever = tables, retriever
        log.info("serving tables %s swapped in", tables.version)
        return True

    def pick_up_items(self) -> int:
        """One look of the new-items watch: the catalog's items created or updated since the last look (every
        item at the first) go into the in-memory tables without retraining. An active item the index lacks is
        placed by its content vector (`recsys.models.candidates.content_vector`), so collaborative retrieval and
        the content source find it, with its tags, category and freshness; a deactivated item leaves the
        answers; changed tags or categories apply. New tables are swapped in (copy-on-write: requests keep
        reading the ones they hold). Returns how many items changed; raises when the catalog does not answer
        (the next look reads from the same point)."""
        started = datetime.now(UTC)
        rows = self.catalog.call(lambda s: s.items_changed_since(self._items_since, ITEM_WATCH_COLUMNS))
        stamps = zip(rows["item_id"], rows["updated_at"])
        rows = rows.loc[np.fromiter((self._unplaced.get(item) != stamp for item, stamp in stamps), bool, len(rows))]
        with self._swap:
            if self.retriever is None:  # no candidate tables yet: read everything again once there are
                return 0
            change = self._apply_items(self.tables, self.retriever, rows)
            for row in rows.to_dict("records"):
                if row["item_id"] in self._catalog_items or row["item_id"] in change.changed:
                    self._catalog_items[row["item_id"]] = row
            if change.changed:
                self.post = PostProcessor(change.tables.attributes, self.settings.serving)
                self.tables, self.retriever = change.tables, change.retriever
        self._items_since = started - ITEMS_LOOK_BACK
        if change.changed:
            log.info("catalog items in serving without retraining: %d changed, %d placed by content (%s)",
                     len(change.changed), len(change.placed), ", ".join(change.placed[:10]))
        return len(change.changed)

    def _apply_items(self, tables: ServingTables, retriever: Retriever, rows: pd.DataFrame) -> CatalogChange:
        change = apply_catalog_items(tables, retriever, rows, datetime.now(UTC))
        if change.unplaced:
            stamps = dict(zip(rows["item_id"], rows["updated_at"]))
            for item in change.unplaced:
                if item not in self._unplaced:
                    log.warning("item %s not placed in serving: no catalog item with a vector shares its tags or "
                                "category (tried again when its row changes)", item)
                self._unplaced[item] = stamps.get(item)
        return change

    def watch_items(self, every_seconds: float | None = None) -> None:
        """Run `pick_up_items` in the background now and every `serving.new_items_poll_seconds`."""
        every = self.settings.serving.new_items_poll_seconds if every_seconds is None else every_seconds

        def loop() -> None:
            while True:
                try:
                    self.pick_up_items()
                except Exception as exc:  # noqa: BLE001 - keep serving the tables in use; look again later
                    log.warning("reading new catalog items failed: %r", exc)
                if self._stop.wait(every):
                    return

        threading.Thread(target=loop, daemon=True, name="recsys-items-watch").start()

    def watch_current(self, every_seconds: float = WATCH_SECONDS) -> None:
        """Check `models/CURRENT` in the background and refresh when it names another version."""
        def loop() -> None:
            while not self._stop.wait(every_seconds):
                folder = current_folder(self.settings)
                if folder is not None and folder.name != self.tables.folder_name:
                    try:
                        self.refresh(folder)
                    except Exception as exc:  # noqa: BLE001 - keep serving the tables in use
                        log.warning("refreshing serving tables from %s failed: %r", folder, exc)

        threading.Thread(target=loop, daemon=True, name="recsys-tables-watch").start()
