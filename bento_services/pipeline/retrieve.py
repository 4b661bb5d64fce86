"""Stage one of serving: what candidate generation reads, loaded once, and the per-request call.

`load_serving_tables` reads the candidate artifact (`data_dir/models/<version>/item_index`), the item
catalog snapshot and the interaction history from the lake at startup, so a request touches only
memory: the FAISS index, the popularity tables and the item attributes post-processing needs. The
popular list is kept apart from the index: it is the floor of the ladder and needs no artifact.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from recsys.backends import open_lake
from recsys.models.candidates import (
    POPULAR_KEPT,
    TRENDING_DAYS,
    Candidate,
    CandidateGenerator,
    CandidateTables,
    ItemUpdate,
    Quotas,
    build_tables,
    popular_items,
)
from recsys.models.item_index import ItemIndex
from recsys.models.neighbours import load_neighbours
from recsys.settings import Settings
from recsys.stores.lake import ItemActivity

log = logging.getLogger(__name__)
FRESH_DAYS = 30
FOLD_IN_ITEMS = 50


@dataclass
class ItemAttributes:
    """What post-processing asks of an item, as plain dicts and sets (no per-item pandas lookups)."""

    category: dict[str, str] = field(default_factory=dict)
    inactive: set[str] = field(default_factory=set)
    fresh: set[str] = field(default_factory=set)  # first seen within FRESH_DAYS of the newest event

    def with_items(self, updates: Sequence[ItemUpdate], fresh: Sequence[str] = ()) -> ItemAttributes:
        """New attributes with these items' category and active state as given, and `fresh` added; this object is
        untouched (copy-on-write: requests read it)."""
        category, inactive = dict(self.category), set(self.inactive)
        for update in updates:
            if update.category:
                category[update.item_id] = update.category
            else:
                category.pop(update.item_id, None)
            if update.is_active:
                inactive.discard(update.item_id)
            else:
                inactive.add(update.item_id)
        return ItemAttributes(category, inactive, self.fresh | set(fresh) if fresh else self.fresh)


@dataclass
class ServingTables:
    """Everything the request path reads from memory; `tables` is None when the index could not load."""

    version: str
    tables: CandidateTables | None
    folder_name: str  # models/<folder_name>: what `models/CURRENT` is compared with
    popular: list[tuple[str, float]]
    attributes: ItemAttributes
    error: str | None = None


def current_folder(settings: Settings) -> Path | None:
    """`data_dir/models/<CURRENT>`, or None when no candidate artifact was published."""
    models = settings.data_path / "models"
    current = models / "CURRENT"
    return models / current.read_text().strip() if current.is_file() else None


def load_serving_tables(settings: Settings, folder: Path | None) -> ServingTables:
    """Catalog and history from the lake, the item index from `folder`; a bad index leaves `tables` None."""
    lake = open_lake(settings)
    items = lake.latest_snapshot("items")
    if items is None:
        items = pd.DataFrame({"item_id": pd.Series(dtype=str), "category": pd.Series(dtype=object),
                              "tags": pd.Series(dtype=object)})
    activity = _activity(settings)
    counts = activity.counts
    popular = popular_items(counts)
    if not popular:  # no events yet: the floor is the catalog itself, so an answer is never empty
        popular = [(str(i), 0.0) for i in items["item_id"].head(POPULAR_KEPT)]
    now = activity.newest if activity.newest is not None else pd.Timestamp.now(tz="UTC")
    attributes = _attributes(items, activity.first_seen, now)
    version = folder.name if folder is not None else "none"
    if folder is None:
        return ServingTables(version, None, version, popular, attributes, "no candidate artifact (models/CURRENT)")
    try:
        index = ItemIndex.load(folder / "item_index")
        tables = build_tables(items, activity.recent, index, _vectors(index), now.to_pydatetime(),
                              neighbours=load_neighbours(folder), counts=counts)
    except Exception as exc:  # noqa: BLE001 - a missing or corrupt index is a rung of the ladder, not a crash
        log.warning("candidate index at %s unusable: %r", folder, exc)
        return ServingTables(version, None, folder.name, popular, attributes, f"item index unusable: {exc}")
    return ServingTables(index.meta.model_version or version, tables, folder.name, popular, attributes)


def _activity(settings: Settings) -> ItemActivity:
    """Per-item counts, first sightings and the trending window, aggregated from the lake in batches: start-up
    memory follows the catalog, not the number of interactions."""
    try:
        return open_lake(settings).item_activity(recent_days=TRENDING_DAYS)
    except Exception as exc:  # noqa: BLE001 - an empty or unreadable lake is a valid (cold) start
        log.warning("no interaction history in the lake: %r", exc)
        return ItemActivity.empty()


def _attributes(items: pd.DataFrame, first_seen: pd.Series, now: pd.Timestamp) -> ItemAttributes:
    ids = items["item_id"].astype(str)
    category = dict(zip(ids, items["category"].fillna("").astype(str)))
    inactive = set(ids[~items["is_active"].astype(bool)]) if "is_active" in items else set()
    fresh = {str(i) for i in first_seen[first_seen >= now - timedelta(days=FRESH_DAYS)].index}
    return ItemAttributes(category, inactive, fresh)


def _vectors(index: ItemIndex) -> np.ndarray:
    """The item vectors back from the index (exact for flat and IVF-Flat), in `index.item_ids` order."""
    raw = index.faiss_index
    if isinstance(raw, faiss.IndexIVF):
        raw.make_direct_map()
    return np.asarray(raw.reconstruct_n(0, raw.ntotal), dtype=np.float32)


class Retriever:
    """Candidate generation for one user: the merged sources of `CandidateGenerator`."""

    def __init__(self, tables: CandidateTables, nprobe: int, quotas: Quotas = Quotas()) -> None:
        self.tables = tables
        self.generator = CandidateGenerator(tables, quotas, nprobe=nprobe)
        # The item vectors as one matrix (the rows `tables.vectors` already views, when it was built from one).
        first = next(iter(tables.vectors.values()), None)
        base = first.base if first is not None else None
        if isinstance(base, np.ndarray) and base.ndim == 2 and len(base) == len(tables.vectors):
            self._matrix = base
        else:
            dim = tables.index.meta.dim
            self._matrix = np.array(list(tables.vectors.values()), dtype=np.float32).reshape(-1, dim)
        self._rows = {item: row for row, item in enumerate(tables.vectors)}
        # Items placed after the load (`with_items`), beside the loaded matrix, which is never modified:
        # rows len(_matrix) and on.
        self._extra = np.zeros((0, self._matrix.shape[1]), dtype=np.float32)
        self._extra_rows: dict[str, int] = {}

    def with_items(self, updates: Sequence[ItemUpdate]) -> Retriever:
        """A retriever over new tables in which these items are as given (`CandidateGenerator.with_items`); the
        placed ones get rows for fold-in and embedding scores. This retriever is untouched (copy-on-write)."""
        retriever = copy.copy(self)
        retriever.generator = self.generator.with_items(updates)
        retriever.tables = retriever.generator.tables
        placed = {u.item_id: u.vector for u in updates if u.vector is not None}
        if placed:
            first = len(self._matrix) + len(self._extra)
            retriever._extra = np.vstack([self._extra, np.array(list(placed.values()), dtype=np.float32)])
            retriever._extra_rows = {**self._extra_rows, **{item: first + k for k, item in enumerate(placed)}}
        return retriever

    def updates_from(self, rows: pd.DataFrame) -> tuple[list[ItemUpdate], list[str]]:
        """What these catalog rows change for serving (item_id, category, tags, is_active): the items whose
        category, tags or active state differ from what the tables hold, each active item the index lacks with
        its content vector; and the ids of those no content vector could be computed for (left out)."""
        generator = self.generator
        updates: list[ItemUpdate] = []
        unplaced: list[str] = []
        for item, category, tags, active in zip(rows["item_id"].astype(str), rows["category"], rows["tags"],
                                                rows["is_active"]):
            update = ItemUpdate(item, str(category) if isinstance(category, str) and category else None,
                                _tags(tags), bool(active) if active is not None and active == active else True)
            placed = item in generator.tables.vectors
            if update.is_active and not placed:
                vector = generator.content_vector(update.tags, update.category)
                if vector is None:
                    unplaced.append(item)
                    continue
                updates.append(replace(update, vector=vector))
            elif (generator.category.get(item) != update.category
                  or tuple(generator.tags.get(item, ())) != update.tags
                  or (item in generator.servable) != update.is_active):
                updates.append(update)
        return updates, unplaced

    def retrieve(self, user_vector: np.ndarray | None, history: Sequence[str], consumed: set[str],
                 onboarding: Sequence[str], keep: int | None = None) -> list[Candidate]:
        """Candidates best first; `history` oldest first. A user with neither vector nor history is a cold start.
        `keep`: only the best that many (all ~1,000 are merged; a request needs its ranked head and a margin)."""
        return self.generator.generate(user_vector, list(history), consumed, onboarding_categories=onboarding,
                                       keep=keep)

    def fold_in(self, history: Sequence[str], last: int = FOLD_IN_ITEMS) -> np.ndarray | None:
        """A user vector from the user's items (the normalized mean of the newest `last` known ones), for a
        user the nightly run has not embedded yet; None when none of them has a vector."""
        rows = [row for row in (self._row(i) for i in history[-last:]) if row >= 0]
        if not rows:
            return None
        centre = self._gather(np.asarray(rows, dtype=np.int64)).mean(axis=0)
        return (centre / max(float(np.linalg.norm(centre)), 1e-12)).astype(np.float32)

    def embedding_scores(self, user_vector: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        """User-item inner products of the two-tower model; 0 where either side has no vector."""
        if user_vector is None:
            return np.zeros(len(item_ids), dtype=np.float32)
        rows = np.fromiter((self._row(item) for item in item_ids), dtype=np.int64, count=len(item_ids))
        scores = self._gather(np.maximum(rows, 0)) @ np.asarray(user_vector, dtype=np.float32)
        scores[rows < 0] = 0.0
        return scores

    def _row(self, item: str) -> int:
        """The item's row in the loaded matrix, then the placed items'; -1 when it has no vector."""
        row = self._rows.get(item)
        return self._extra_rows.get(item, -1) if row is None else row

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        if not self._extra_rows:
            return self._matrix[rows]
        loaded = len(self._matrix)
        out = np.empty((len(rows), self._matrix.shape[1]), dtype=np.float32)
        inside = rows < loaded
        out[inside] = self._matrix[rows[inside]]
        out[~inside] = self._extra[rows[~inside] - loaded]
        return out


@dataclass(frozen=True)
class CatalogChange:
    """Serving tables with the catalog's changed items in (`apply_catalog_items`)."""

    tables: ServingTables
    retriever: Retriever
    changed: list[str]  # items whose serving state changed, placed ones included
    placed: list[str]  # items the index gained, with a content vector
    unplaced: list[str]  # active items the index lacks that no content vector could be computed for


def apply_catalog_items(tables: ServingTables, retriever: Retriever, rows: pd.DataFrame,
                        now: datetime) -> CatalogChange:
    """`tables` and `retriever` with what these catalog rows change (item_id, category, tags, is_active,
    created_at): new tables when something changed (copy-on-write, the given ones untouched), the given ones
    otherwise. A placed item created within FRESH_DAYS of `now` is fresh (the freshness boost)."""
    if rows.empty:
        return CatalogChange(tables, retriever, [], [], [])
    updates, unplaced = retriever.updates_from(rows)
    if not updates:
        return CatalogChange(tables, retriever, [], [], unplaced)
    placed = [u.item_id for u in updates if u.vector is not None]
    created = dict(zip(rows["item_id"].astype(str), pd.to_datetime(rows["created_at"], utc=True)))
    recent = pd.Timestamp(now) - timedelta(days=FRESH_DAYS)
    fresh = [item for item in placed if not pd.isna(created.get(item)) and created[item] >= recent]
    updated = retriever.with_items(updates)
    attributes = tables.attributes.with_items(updates, fresh)
    return CatalogChange(replace(tables, tables=updated.tables, attributes=attributes), updated,
                         [u.item_id for u in updates], placed, unplaced)


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(dict.fromkeys(str(tag) for tag in value))
    return ()
