"""Stage one: about 1,000 candidates per request from five sources, merged with provenance.

- collaborative: nearest items to the user's embedding in the FAISS index (350);
- similar_items: item-to-item neighbours of the user's recent items, learned offline from
  co-consumption (`recsys.models.neighbours`), newer items weighing more (500; empty when the
  model version has no neighbours);
- content: items near the user's recent items, and items sharing their categories and tags, new
  items included, which is how a new item gets its first chance (100);
- popularity within the user's categories (25);
- trending this week, time-decayed (25).

Quotas are configurable (the design's 500/300/150/50 predates the similar-items source; see
`Quotas`). The merge removes items the user already consumed, inactive items and ids the catalog
does not know, keeps each candidate's sources and per-source scores, and orders by weighted
reciprocal-rank fusion so any prefix of the list is a fair mix. A user without an embedding (new
user) falls back to their onboarding categories, else to what is popular.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from recsys.models.fusion import EMPTY, CodeBook, Codes, fuse, summed
from recsys.models.item_index import ItemIndex
from recsys.models.neighbours import ItemNeighbours

RRF_K = 60.0
#: The newest recent items the similar-items source reads.
SIMILAR_HISTORY = 200
TRENDING_DAYS = 7  # trending counts the events of this many days before `now` (`build_tables`); older ones: none


@dataclass(frozen=True)
class Quotas:
    """Most candidates each source may add. The design's 500/300/150/50 made room for the similar-items
    source (added later): these shares did best on a validation split carved from the training part
    of ml-latest-small (Recall@100/500/1000 and NDCG@10, see `training/candidate_eval.py`)."""

    collaborative: int = 350
    similar_items: int = 500
    content: int = 100
    popularity: int = 25
    trending: int = 25


@dataclass(frozen=True)
class FusionWeights:
    """How much each source's ranks count in the merged order (reciprocal-rank fusion); chosen with
    the quotas on the validation split (the two learned sources lead, the others season the list)."""

    collaborative: float = 1.0
    similar_items: float = 1.5
    content: float = 0.3
    popularity: float = 0.15
    trending: float = 0.15


@dataclass(slots=True)
class Candidate:
    """Read-only by convention (not frozen: a frozen dataclass's __init__ costs three times as much, and a request
    makes a few hundred)."""

    item_id: str
    score: float  # reciprocal-rank fusion over the sources
    sources: dict[str, float]  # source -> that source's own score


@dataclass
class CandidateTables:
    """What the sources read, built offline from the lake and the catalog (`build_tables`)."""

    items: pd.DataFrame  # index item_id; columns category, tags (list), is_active
    index: ItemIndex
    vectors: dict[str, np.ndarray]  # item_id -> unit vector, for "near the recent items"
    popular_by_category: dict[str, list[tuple[str, float]]]
    popular: list[tuple[str, float]]
    trending: list[tuple[str, float]]
    by_tag: dict[str, list[str]] = field(default_factory=dict)
    neighbours: ItemNeighbours | None = None  # item-to-item source; None: that source is empty


POPULAR_KEPT = 2_000  # the popular list: the popularity source and the floor of the ladder
#: In a new item's content vector, the mean of the items sharing its tags counts this many times the mean
#: of its category's items.
TAG_OVER_CATEGORY = 2.0
#: Most items of one tag, and of the category, a content vector averages (the first ones listed).
CONTENT_MEMBERS = 2_000


@dataclass(frozen=True)
class ItemUpdate:
    """An item as the catalog holds it now, for the sources: its category, tags and whether it may be
    recommended. `vector` places an item the index lacks (its content vector, `content_vector`)."""

    item_id: str
    category: str | None
    tags: tuple[str, ...]
    is_active: bool
    vector: np.ndarray | None = None


def content_vector(tags: Sequence[str], in_category: Sequence[str], vectors: Mapping[str, np.ndarray],
                   by_tag: Mapping[str, Sequence[str]]) -> np.ndarray | None:
    """Where an item with no learned vector belongs, from its content: the normalized weighted mean of
    the mean vector of the items sharing its tags (each weighing the number of tags it shares) and the mean
    vector of its category's items (`in_category`), the tags' mean counting TAG_OVER_CATEGORY times the
    category's. With no item sharing a tag, the category's mean alone; None when neither has an item
    with a vector. At most CONTENT_MEMBERS items per tag and of the category are read."""
    shared: Counter[str] = Counter()
    for tag in dict.fromkeys(tags):
        for item in by_tag.get(tag, ())[:CONTENT_MEMBERS]:
            if item in vectors:
                shared[item] += 1
    members = [item for item in in_category[:CONTENT_MEMBERS] if item in vectors]
    parts: list[np.ndarray] = []
    if shared:
        weights = np.fromiter(shared.values(), dtype=np.float64, count=len(shared))
        rows = np.array([vectors[item] for item in shared], dtype=np.float64)
        parts.append(TAG_OVER_CATEGORY * (weights @ rows) / weights.sum())
    if members:
        parts.append(np.mean(np.array([vectors[item] for item in members], dtype=np.float64), axis=0))
    if not parts:
        return None
    centre = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(centre))
    return None if norm < 1e-12 else (centre / norm).astype(np.float32)


def build_tables(
    items: pd.DataFrame, events: pd.DataFrame, index: ItemIndex, vectors: np.ndarray, now: datetime,
    half_life_days: float = 2.0, per_category: int = 500, neighbours: ItemNeighbours | None = None,
    counts: pd.Series | None = None,
) -> CandidateTables:
    """Popularity per category, trending (events of the last TRENDING_DAYS, halved every `half_life_days`).
    `counts`: events per item, most first, when the caller already has them; `events` then need only hold the
    trending window."""
    catalog = items.set_index("item_id")
    if "is_active" not in catalog:
        catalog["is_active"] = True
    counts = events["item_id"].value_counts() if counts is None else counts
    category = catalog["category"].reindex(counts.index)
    popular_by_category = {
        str(c): [(i, float(n)) for i, n in counts[category == c].head(per_category).items()]
        for c in category.dropna().unique()
    }
    recent = events[events["event_time"] >= pd.Timestamp(now) - timedelta(days=TRENDING_DAYS)]
    age_days = (pd.Timestamp(now) - recent["event_time"]).dt.total_seconds() / 86400
    trend = (0.5 ** (age_days / half_life_days)).groupby(recent["item_id"]).sum().sort_values(ascending=False)
    by_tag: dict[str, list[str]] = defaultdict(list)
    for item, tags in catalog["tags"].items():
        for tag in tags if isinstance(tags, (list, np.ndarray)) else []:
            by_tag[str(tag)].append(str(item))
    return CandidateTables(
        items=catalog, index=index, vectors=dict(zip(index.item_ids, vectors)),
        popular_by_category=popular_by_category, popular=popular_items(counts),
        trending=[(i, float(s)) for i, s in trend.head(1000).items()], by_tag=dict(by_tag), neighbours=neighbours,
    )


def _with_rows(items: pd.DataFrame, updates: Sequence[ItemUpdate]) -> pd.DataFrame:
    """A new catalog frame in which the updated items' category, tags and is_active are as given (their other
    columns kept, new items appended); `items` is untouched."""
    ids = [u.item_id for u in updates]
    rows = items.reindex(pd.Index(ids, name=items.index.name))
    rows["category"] = pd.Series([u.category for u in updates], index=rows.index, dtype=object)
    rows["tags"] = pd.Series([list(u.tags) for u in updates], index=rows.index, dtype=object)
    rows["is_active"] = [u.is_active for u in updates]
    return pd.concat([items.drop(index=[i for i in ids if i in items.index]), rows])


def popular_items(counts: pd.Series) -> list[tuple[str, float]]:
    """The POPULAR_KEPT most interacted items with their counts, from events per item (most first)."""
    return [(str(i), float(n)) for i, n in counts.head(POPULAR_KEPT).items()]


class CandidateGenerator:
    def __init__(
        self, tables: CandidateTables, quotas: Quotas = Quotas(), nprobe: int = 16,
        weights: FusionWeights = FusionWeights(), recency: float = 0.97,
    ) -> None:
        """`recency`: in the similar-items source, each older recent item counts this times the next."""
        self.tables, self.quotas, self.nprobe, self.weights = tables, quotas, nprobe, weights
        self.recency = recency
        active = tables.items["is_active"].astype(bool)
        self.servable = frozenset(str(i) for i in active.index[active.to_numpy()])
        # Per-item attributes as dicts: a request asks about ~20 recent items, and a pandas lookup on a
        # million-row catalog costs ~100 ms where a dict costs microseconds.
        items = tables.items
        self.category = {str(i): str(c) for i, c in zip(items.index, items["category"]) if isinstance(c, str)}
        self.tags = {str(i): [str(t) for t in tags] for i, tags in zip(items.index, items["tags"])
                     if isinstance(tags, (list, np.ndarray)) and len(tags)}
        self._by_category: dict[str, list[str]] | None = None  # every item per category, made when first needed
        # The request path's item codes (`recsys.models.fusion`): every id a source can name has one.
        neighbours = tables.neighbours
        self.book = CodeBook.of([(str(i) for i in items.index), tables.index.item_ids,
                                 neighbours.item_ids if neighbours is not None else (),
                                 (i for i, _ in tables.popular), (i for i, _ in tables.trending)], self.servable)
        self._index_codes = self.book.mapping(tables.index.item_ids)  # index row -> code
        self._neighbour_codes = self.book.mapping(neighbours.item_ids) if neighbours is not None else EMPTY[0]
        self._neighbour_rows = np.full(len(self.book), -1, dtype=np.int64)  # code -> neighbours row (-1: none)
        self._neighbour_rows[self._neighbour_codes] = np.arange(len(self._neighbour_codes))

    # -- items placed or changed after the tables were built -------------------------------------------------
    def content_vector(self, tags: Sequence[str], category: str | None) -> np.ndarray | None:
        """`content_vector` over these tables: the category's items are its most popular ones (the best trained
        vectors), else all its items."""
        members: list[str] = []
        if category:
            members = [item for item, _ in self.tables.popular_by_category.get(category, [])]
            if not any(item in self.tables.vectors for item in members):
                if self._by_category is None:  # one pass over the catalog, only for categories without events
                    by_category: dict[str, list[str]] = defaultdict(list)
                    for item, name in self.category.items():
                        by_category[name].append(item)
                    self._by_category = dict(by_category)
                members = self._by_category.get(category, [])
        return content_vector(tags, members, self.tables.vectors, self.tables.by_tag)

    def with_items(self, updates: Sequence[ItemUpdate]) -> CandidateGenerator:
        """A generator over new tables in which these items are as given (category, tags, servable or not; a
        `vector` places the item in the index and the vectors, so the collaborative and content sources find
        it). Copy-on-write: this generator, its tables, index, dicts, sets, lists and frame are untouched, since
        requests may be reading them; what changes is copied (dicts and sets cost O(catalog), the index only
        the placed items, see `ItemIndex.with_items`). A newly tagged item goes to the front of its tags'
        lists, which the content source reads a quota's worth of."""
        if not updates:
            return self
        latest = {u.item_id: u for u in updates}  # one update per item: the last given
        updates = list(latest.values())
        tables = self.tables
        placed = [u for u in updates if u.vector is not None]
        index, vectors = tables.index, tables.vectors
        if placed:
            index = index.with_items(np.array([u.vector for u in placed], dtype=np.float32),
                                     [u.item_id for u in placed])
            vectors = {**vectors, **{u.item_id: np.asarray(u.vector, dtype=np.float32) for u in placed}}
        category, tags = dict(self.category), dict(self.tags)
        gained: dict[str, list[str]] = defaultdict(list)
        lost: dict[str, set[str]] = defaultdict(set)
        for update in updates:
            before, after = set(self.tags.get(update.item_id, ())), set(update.tags)
            for tag in dict.fromkeys(update.tags):
                if tag not in before:
                    gained[tag].append(update.item_id)
            for tag in before - after:
                lost[tag].add(update.item_id)
            if update.category:
                category[update.item_id] = update.category
            else:
                category.pop(update.item_id, None)
            if update.tags:
                tags[update.item_id] = list(update.tags)
            else:
                tags.pop(update.item_id, None)
        by_tag = dict(tables.by_tag)
        for tag in gained.keys() | lost.keys():
            gone = lost.get(tag, set())
            by_tag[tag] = gained.get(tag, [])[::-1] + [i for i in by_tag.get(tag, []) if i not in gone]
            if not by_tag[tag]:
                del by_tag[tag]
        servable = self.servable.difference(u.item_id for u in updates if not u.is_active).union(
            u.item_id for u in updates if u.is_active)
        generator = copy.copy(self)
        generator.tables = replace(tables, items=_with_rows(tables.items, updates), index=index, vectors=vectors,
                                   by_tag=by_tag)
        generator.category, generator.tags, generator.servable = category, tags, servable
        generator._by_category = None
        generator.book = self.book.with_items([(u.item_id, u.is_active) for u in updates])
        if placed:
            generator._index_codes = np.concatenate([self._index_codes,
                                                     generator.book.mapping([u.item_id for u in placed])])
        grown = len(generator.book) - len(self.book)
        generator._neighbour_rows = np.concatenate([self._neighbour_rows, np.full(grown, -1, dtype=np.int64)])
        return generator

    def generate(
        self, user_vector: np.ndarray | None, recent_items: Sequence[str], consumed: set[str],
        onboarding_categories: Sequence[str] = (), k: int | None = None, keep: int | None = None,
    ) -> list[Candidate]:
        """Merged candidates for one user, best first; at most `k` (default: the sum of quotas); `keep`: see
        `merge`. Without `k` the merge runs over item codes (`fusion.fuse`, the same list)."""
        categories = self._categories(recent_items) or list(onboarding_categories)
        lists = {
            "collaborative": self._collaborative(user_vector),
            "similar_items": self._similar_items(recent_items, consumed),
            "content": self._content(recent_items, categories),
            "popularity": self._popularity(categories),
            "trending": self._trending(),
        }
        quotas = self.quotas.__dict__
        if k is not None:  # a top-up reads the sources past their quotas: the merge over ids
            return self.merge({source: self.book.as_pairs(found) for source, found in lists.items()}, consumed, k,
                              keep)
        limit = sum(quotas.values())
        return fuse(self.book, lists, self.book.blocked(consumed), quotas, self.weights.__dict__, RRF_K,
                    min(limit, keep) if keep is not None else limit, Candidate)

    # -- sources: (id, score) lists best first; the request path reads them as codes (the `_` methods) -------
    def collaborative(self, user_vector: np.ndarray | None) -> list[tuple[str, float]]:
        return self.book.as_pairs(self._collaborative(user_vector))

    def similar_items(self, recent_items: Sequence[str], consumed: set[str]) -> list[tuple[str, float]]:
        """Items most often consumed with the user's recent ones (newest weigh most)."""
        return self.book.as_pairs(self._similar_items(recent_items, consumed))

    def content(self, recent_items: Sequence[str], categories: Sequence[str]) -> list[tuple[str, float]]:
        """Near the recent items (mean of their vectors), then items sharing their tags and categories."""
        return self.book.as_pairs(self._content(recent_items, categories))

    def popularity(self, categories: Sequence[str]) -> list[tuple[str, float]]:
        return self.book.as_pairs(self._popularity(categories))

    def trending(self) -> list[tuple[str, float]]:
        return self.book.as_pairs(self._trending())

    def _collaborative(self, user_vector: np.ndarray | None) -> Codes:
        if user_vector is None or self.quotas.collaborative == 0:
            return EMPTY
        rows, scores = self.tables.index.search_rows(user_vector, self._room(self.quotas.collaborative),
                                                     nprobe=self.nprobe)
        return self._index_codes[rows], scores.astype(np.float64)

    def _similar_items(self, recent_items: Sequence[str], consumed: set[str]) -> Codes:
        neighbours = self.tables.neighbours
        if neighbours is None or self.quotas.similar_items == 0:
            return EMPTY
        # Older items weigh recency**age: past SIMILAR_HISTORY items (0.97**200 < 0.003) they no longer move
        # the order, but would still cost their neighbours' rows (about 1,000 each) per request.
        rows = self._neighbour_rows[self.book.codes(recent_items[-SIMILAR_HISTORY:])]
        excluded = self._neighbour_rows[self.book.codes(consumed)]
        cols, values = neighbours.similar_rows(rows[rows >= 0], self._room(self.quotas.similar_items),
                                               excluded[excluded >= 0], recency=self.recency)
        return self._neighbour_codes[cols], values

    def _content(self, recent_items: Sequence[str], categories: Sequence[str]) -> Codes:
        quota = self.quotas.content
        if quota == 0:
            return EMPTY
        found = [EMPTY]
        known = [self.tables.vectors[i] for i in recent_items[-20:] if i in self.tables.vectors]
        if known:
            centre = np.mean(known, axis=0)
            centre /= max(float(np.linalg.norm(centre)), 1e-12)
            rows, scores = self.tables.index.search_rows(centre.astype(np.float32), self._room(quota),
                                                         nprobe=self.nprobe)
            found.append((self._index_codes[rows], scores.astype(np.float64)))
        book, tables = self.book, self.tables
        parts = [(book.items(("tag", tag, quota), tables.by_tag.get(tag, [])[:quota]), 1.0 / (1 + rank))
                 for rank, tag in enumerate(self._tags(recent_items))]
        parts += [(book.pairs(("category", category, quota), tables.popular_by_category.get(category, [])[:quota])[0],
                   0.5 / (1 + rank)) for rank, category in enumerate(categories[:3])]
        if parts:
            codes, totals = summed(np.concatenate([codes for codes, _ in parts]),
                                   np.concatenate([np.full(len(codes), weight) for codes, weight in parts]))
            found.append((codes[: self._room(quota)], totals[: self._room(quota)]))
        return np.concatenate([codes for codes, _ in found]), np.concatenate([scores for _, scores in found])

    def _popularity(self, categories: Sequence[str]) -> Codes:
        room = self._room(self.quotas.popularity)
        if not categories:
            return self.book.pairs(("popular", room), self.tables.popular[:room])
        share = max(1, room // min(3, len(categories)))
        found = [self.book.pairs(("category", c, share), self.tables.popular_by_category.get(c, [])[:share])
                 for c in categories[:3]]
        return np.concatenate([codes for codes, _ in found]), np.concatenate([scores for _, scores in found])

    def _trending(self) -> Codes:
        room = self._room(self.quotas.trending)
        return self.book.pairs(("trending", room), self.tables.trending[:room])

    # -- merge ----------------------------------------------------------------------------------------------
    def merge(self, lists: dict[str, list[tuple[str, float]]], consumed: set[str], k: int | None,
              keep: int | None = None) -> list[Candidate]:
        """Fuse by weighted reciprocal rank, keeping provenance; each source contributes at most its quota.

        Asked for exactly `k` when overlaps between sources left slots empty, the list is topped up
        with the sources' tails (past their quotas) in their own fused order, at score 0. `keep`: only the
        best `keep` are returned (the same first ones; what a request can show is far fewer than ~1,000).
        """
        quotas = self.quotas.__dict__
        servable = self.servable
        fused: dict[str, float] = {}
        tail: dict[str, float] = {}
        within_scores: dict[str, dict[str, float]] = {}  # per source, its own score of each item it placed
        tail_scores: dict[str, dict[str, float]] = {}  # ... of each item past its quota (read for a top-up)
        for source, ranked in lists.items():
            weight, quota = getattr(self.weights, source), quotas[source]
            kept = [pair for pair in ranked if pair[0] not in consumed and pair[0] in servable]
            first_score = dict(reversed(kept))  # an item a source lists twice keeps its first score
            order = list(dict.fromkeys(item for item, _ in kept))
            head = order[:quota]
            within_scores[source] = {item: first_score[item] for item in head}
            for rank, item in enumerate(head):
                fused[item] = fused.get(item, 0.0) + weight / (RRF_K + rank + 1)
            if k is not None:  # past the quota only the top-up reads a source
                tail_scores[source] = {item: first_score[item] for item in order[quota:]}
                for rank, item in enumerate(order[quota:], start=quota):
                    tail[item] = tail.get(item, 0.0) + weight / (RRF_K + rank + 1)
        limit = k or sum(quotas.values())
        first = min(limit, keep) if keep is not None else limit
        ordered = sorted(fused)  # by id, then (stable) by score, best first: ties keep the id order
        ordered.sort(key=fused.__getitem__, reverse=True)
        del ordered[first:]
        if k is not None and len(ordered) < first:
            extra_items = sorted((i for i in tail if i not in fused), key=lambda i: (-tail[i], i))
            ordered += extra_items[: first - len(ordered)]
        return [Candidate(i, fused.get(i, 0.0), _provenance(i, within_scores) or _provenance(i, tail_scores))
                for i in ordered]

    def _room(self, quota: int) -> int:
        """Ask a source for more than its quota: consumed and unservable items are dropped after."""
        return quota * 2 + 50

    def _categories(self, recent_items: Sequence[str]) -> list[str]:
        """The recent items' categories, most frequent first (ties: first seen first)."""
        counts = Counter(self.category[i] for i in recent_items if i in self.category)
        return [c for c, _ in counts.most_common()]

    def _tags(self, recent_items: Sequence[str]) -> list[str]:
        counts: dict[str, int] = defaultdict(int)
        for item in recent_items[-20:]:
            for tag in self.tags.get(item, ()):
                counts[tag] += 1
        return sorted(counts, key=lambda t: -counts[t])[:5]


def _provenance(item: str, by_source: dict[str, dict[str, float]]) -> dict[str, float]:
    """The sources that placed the item (in source order) with their own scores."""
    return {source: float(scores[item]) for source, scores in by_source.items() if item in scores}
