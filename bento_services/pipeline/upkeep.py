"""Keeping the request path's in-memory tables current without stopping it: a release (`models/RELEASE.json`:
a stable version and optionally a canary beside it, `follow_release`; without one, a re-published
`models/CURRENT`, `refresh`) and the catalog's new and changed items (`pick_up_items`, placed by their content
vectors without retraining). Every change builds new deployments and swaps the rollout in under one lock
(copy-on-write: a request keeps the deployment it started with, `pinned`).

`TablesUpkeep` is a part of `RecommendationPipeline`, which owns the state it works on.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bento_services.pipeline.connections import Connection
from bento_services.pipeline.contracts import Ranker
from bento_services.pipeline.deployments import (
    Deployment,
    Rollout,
    UserVectors,
    VectorSource,
    deployment_of,
    store_ranker,
)
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
from recsys.release import Version, read_release
from recsys.settings import Settings
from recsys.stores import CatalogStore

log = logging.getLogger(__name__)
#: The new-items watch reads again the rows written this long before its last look: a write stamped before
#: the look but committed after it (a long import, a skewed clock) is still seen. Re-reading is harmless.
ITEMS_LOOK_BACK = timedelta(minutes=2)
#: What the new-items watch reads of the catalog's items.
ITEM_WATCH_COLUMNS = ("category", "tags", "is_active", "created_at", "updated_at")


class ReleaseLoadError(Exception):
    """A version the release record names could not be loaded; the rollout in use keeps serving."""


class TablesUpkeep:
    """The swaps of `RecommendationPipeline`'s rollout; the attributes are the pipeline's."""

    settings: Settings
    rollout: Rollout
    embeddings: VectorSource
    catalog: Connection[CatalogStore]
    on_canary: bool = False  # a pinned view of the canary deployment
    _pinned: bool = False
    _stop: threading.Event
    _swap: threading.Lock
    _items_since: datetime | None
    _catalog_items: dict[str, dict[str, Any]]
    _unplaced: dict[str, object]

    # The deployment a request reads (the stable one, or the one a pinned view holds).
    @property
    def deployment(self) -> Deployment:
        return self.rollout.stable

    @property
    def tables(self) -> ServingTables:
        return self.rollout.stable.tables

    @property
    def retriever(self) -> Retriever | None:
        return self.rollout.stable.retriever

    @property
    def post(self) -> PostProcessor:
        return self.rollout.stable.post

    @property
    def live(self) -> LiveSession:
        return self.rollout.stable.live

    @property
    def ranker(self) -> Ranker | None:
        return self.rollout.stable.ranker

    def pinned(self, user_id: str) -> Any:
        """This pipeline bound to the user's deployment for one request (the canary for the canary's share of
        users): a shallow copy whose rollout is that deployment alone, unaffected by later swaps."""
        if self._pinned:
            return self
        rollout = self.rollout  # one read: the stable and canary of one swap
        chosen = rollout.pick(user_id)
        view = copy.copy(self)
        view.rollout, view._pinned, view.on_canary = Rollout(chosen), True, chosen is not rollout.stable
        if chosen.vectors is not None:
            view.embeddings = chosen.vectors
        return view

    def refresh(self, folder: Path | None = None) -> bool:
        """Reload the in-memory tables (a newly published artifact, today's popularity) and swap them in.

        A new artifact that does not load is not swapped in: the tables in use keep serving. Returns
        whether the swap happened.
        """
        tables = load_serving_tables(self.settings, folder or current_folder(self.settings))
        if tables.tables is None and self.tables.tables is not None:
            log.warning("not swapping in candidate tables %s: %s", tables.version, tables.error)
            return False
        with self._swap:
            stable = self._with_catalog_items(tables, self.ranker, None)
            self.rollout = Rollout(stable)
        log.info("serving tables %s swapped in", tables.version)
        return True

    def follow_release(self) -> bool:
        """One look at the release record: load each version it names that is not loaded yet (off the request
        path), then swap in the rollout it describes. Without a record, `models/CURRENT` is followed (`refresh`).
        A version that does not load raises `ReleaseLoadError` and leaves the rollout in use serving. Returns
        whether the rollout changed."""
        release = read_release(self.settings.data_path)
        if release is None:
            folder = current_folder(self.settings)
            return folder is not None and folder.name != self.tables.folder_name and self.refresh(folder)
        wanted = [release.stable] + ([release.canary] if release.canary is not None else [])
        loaded = {d.version for d in self.rollout.deployments()}
        fresh = {version: self._load(version) for version in wanted if version not in loaded}
        with self._swap:
            have = {d.version: d for d in self.rollout.deployments()} | fresh
            stable = have[release.stable]
            canary = have[release.canary] if release.canary is not None else None
            rollout = Rollout(stable, canary, release.share if canary is not None else 0)
            if rollout == self.rollout:
                return False
            self.rollout = rollout
        log.info("serving stable %s%s", release.stable,
                 f", canary {release.canary} to {release.share}% of users" if release.canary else "")
        return True

    def load_ranker(self, version: str) -> Ranker:
        """The ranker `version` from the model store (tests put their own in)."""
        return store_ranker(version)

    def _load(self, version: Version) -> Deployment:
        folder = self.settings.data_path / "models" / version.candidates
        tables = load_serving_tables(self.settings, folder)
        if tables.tables is None:
            raise ReleaseLoadError(f"version {version}: {tables.error}")
        try:
            ranker = self.load_ranker(version.ranker) if version.ranker is not None else None
        except Exception as exc:  # noqa: BLE001 - any loading error: the version is not served
            raise ReleaseLoadError(f"version {version}: ranker not loadable: {exc!r}") from exc
        with self._swap:
            return self._with_catalog_items(tables, ranker, UserVectors.load(folder))

    def _with_catalog_items(self, tables: ServingTables, ranker: Ranker | None,
                            vectors: UserVectors | None) -> Deployment:
        """The deployment of an artifact with the catalog's changes since applied on top (under `_swap`)."""
        retriever = Retriever(tables.tables, self.settings.serving.nprobe) if tables.tables is not None else None
        self._unplaced.clear()
        if retriever is not None and self._catalog_items:
            change = self._apply_items(tables, retriever, pd.DataFrame(list(self._catalog_items.values())))
            tables, retriever = change.tables, change.retriever
        return deployment_of(self.settings, tables, ranker, retriever, vectors)

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
            rollout = self.rollout
            if rollout.stable.retriever is None:  # no candidate tables yet: read everything again once there are
                return 0
            changes = [self._apply_items(d.tables, d.retriever, rows) if d.retriever is not None else None
                       for d in rollout.deployments()]
            change = changes[0]
            assert change is not None
            for row in rows.to_dict("records"):
                if row["item_id"] in self._catalog_items or row["item_id"] in change.changed:
                    self._catalog_items[row["item_id"]] = row
            if change.changed:  # every loaded version, stable and canary, gets the catalog's changes
                swapped = [d if c is None else replace(d, tables=c.tables, retriever=c.retriever,
                                                       post=PostProcessor(c.tables.attributes, self.settings.serving))
                           for d, c in zip(rollout.deployments(), changes)]
                self.rollout = replace(rollout, stable=swapped[0], canary=swapped[1] if len(swapped) > 1 else None)
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

    def watch_current(self, every_seconds: float | None = None) -> None:
        """`follow_release` in the background now (a canary beside the stable version loaded at start) and every
        `serving.release_poll_seconds`; a failure is logged and the rollout in use keeps serving."""
        every = self.settings.serving.release_poll_seconds if every_seconds is None else every_seconds

        def loop() -> None:
            while True:
                try:
                    self.follow_release()
                except Exception as exc:  # noqa: BLE001 - keep serving the rollout in use; look again later
                    serving = " and ".join(str(d.version) for d in self.rollout.deployments())
                    log.warning("following the release failed, serving %s as before: %s", serving, exc)
                if self._stop.wait(every):
                    return

        threading.Thread(target=loop, daemon=True, name="recsys-release-watch").start()
