"""The request path's candidate merge over integer item codes: the same lists as `CandidateGenerator.merge`,
without a Python operation per source item.

A source answers as two arrays, item codes and that source's scores, in its own order; `fuse` filters, dedupes,
cuts each source at its quota and fuses the ranks in numpy, and makes item ids and provenance dicts only for the
few hundred candidates a request keeps. `CodeBook` numbers the items once per generator (the catalog, the index,
the neighbours and the popular lists) and knows which codes may be served; codes only grow, so a changed catalog
appends to a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

Codes = tuple[np.ndarray, np.ndarray]  # (int64 item codes, float64 scores), a source's order
EMPTY: Codes = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


class CodeBook:
    """Item id <-> code for one generator's tables. `blocked()`: the codes that may not be served, with one more
    entry (True) at the end, which an unknown item's code -1 reads."""

    def __init__(self, ids: list[str], code: dict[str, int], servable: np.ndarray) -> None:
        self.ids, self.code, self.servable = ids, code, servable
        self._cached: dict[object, Codes] = {}

    @classmethod
    def of(cls, groups: Iterable[Iterable[str]], servable: Iterable[str]) -> CodeBook:
        """Codes for the ids of these groups, in order of first appearance."""
        code: dict[str, int] = {}
        for group in groups:
            for item in group:
                code.setdefault(item, len(code))
        book = cls(list(code), code, np.zeros(len(code), dtype=bool))
        book.servable[book.codes(servable)] = True
        return book

    def with_items(self, updates: Sequence[tuple[str, bool]]) -> CodeBook:
        """A new book in which these (item, servable) are as given, new ids appended (the codes held stay);
        this one is untouched (copy-on-write)."""
        code, ids = dict(self.code), list(self.ids)
        for item, _ in updates:
            if item not in code:
                code[item] = len(ids)
                ids.append(item)
        servable = np.zeros(len(ids), dtype=bool)
        servable[: len(self.servable)] = self.servable
        for item, allowed in updates:
            servable[code[item]] = allowed
        return CodeBook(ids, code, servable)

    def __len__(self) -> int:
        return len(self.ids)

    def blocked(self, consumed: Iterable[str]) -> np.ndarray:
        """Per code (and -1, the last entry): not servable or consumed."""
        blocked = np.ones(len(self.ids) + 1, dtype=bool)
        np.logical_not(self.servable, out=blocked[:-1])
        blocked[self.codes(consumed)] = True
        return blocked

    def codes(self, items: Iterable[str]) -> np.ndarray:
        """The codes of the items the book knows (the others left out)."""
        code = self.code
        return np.fromiter((code[i] for i in items if i in code), dtype=np.int64)

    def mapping(self, items: Sequence[str]) -> np.ndarray:
        """Code per position of `items` (-1 where unknown): another table's rows as codes."""
        code = self.code
        return np.fromiter((code.get(i, -1) for i in items), dtype=np.int64, count=len(items))

    def pairs(self, key: object, pairs: Sequence[tuple[str, float]]) -> Codes:
        """A fixed (id, score) list of the tables as arrays, converted once per key (the tables never change: a
        changed catalog makes a new generator and book)."""
        found = self._cached.get(key)
        if found is None:
            found = self._cached[key] = (self.mapping([i for i, _ in pairs]),
                                         np.fromiter((s for _, s in pairs), dtype=np.float64, count=len(pairs)))
        return found

    def items(self, key: object, items: Sequence[str]) -> np.ndarray:
        """A fixed list of ids of the tables as codes, converted once per key (`pairs` with no scores)."""
        if key not in self._cached:
            self.pairs(key, [(item, 0.0) for item in items])
        return self._cached[key][0]

    def as_pairs(self, found: Codes) -> list[tuple[str, float]]:
        """Arrays back to (id, score) pairs."""
        ids = self.ids
        return [(ids[c], s) for c, s in zip(found[0].tolist(), found[1].tolist())]


def first_occurrences(codes: np.ndarray) -> np.ndarray:
    """Positions of each code's first occurrence, in order."""
    _, first = np.unique(codes, return_index=True)
    first.sort()
    return first


def summed(codes: np.ndarray, weights: np.ndarray) -> Codes:
    """Each code once with its weights summed in the given order, the largest sum first, ties in order of first
    appearance (as a dict accumulated in that order, then sorted by value)."""
    items, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    totals = np.bincount(inverse, weights=weights, minlength=len(items))
    order = np.lexsort((first, -totals))
    return items[order], totals[order]


def fuse(book: CodeBook, lists: dict[str, Codes], blocked: np.ndarray, quotas: dict[str, int],
         weights: dict[str, float], rrf_k: float, first: int, make: Callable[[str, float, dict[str, float]], T],
         ) -> list[T]:
    """`CandidateGenerator.merge` without the top-up (k None): each source's items not `blocked` (its first score
    of each), the first `quota` of them fused by weighted reciprocal rank; the best `first`, ties in id order, each
    made with the sources that placed it and their own scores."""
    heads: list[Codes] = []
    for source, (codes, scores) in lists.items():
        allowed = ~blocked[codes]
        codes, scores = codes[allowed], scores[allowed]
        head = first_occurrences(codes)[: quotas[source]]
        heads.append((codes[head], scores[head]))
    everything = np.concatenate([codes for codes, _ in heads])
    if len(everything) == 0:
        return []
    contributions = np.concatenate([weights[source] / (rrf_k + np.arange(len(codes), dtype=np.float64) + 1)
                                    for source, (codes, _) in zip(lists, heads, strict=True)])
    items, inverse = np.unique(everything, return_inverse=True)
    fused = np.bincount(inverse, weights=contributions)  # summed in source order, as the merge adds them
    ids = book.ids
    chosen = _best(fused, items, ids, first)
    ranked = sorted(zip((-fused[chosen]).tolist(), [ids[c] for c in items[chosen].tolist()], chosen.tolist()))
    kept = items[[position for _, _, position in ranked]] if ranked else items[:0]
    # per source: whether it placed each kept item, and with which score
    placed: list[tuple[str, list[bool], list[float]]] = []
    for source, (codes, scores) in zip(lists, heads, strict=True):
        if len(codes):
            sorter = np.argsort(codes)
            at = sorter[np.minimum(np.searchsorted(codes, kept, sorter=sorter), len(codes) - 1)]
            placed.append((source, (codes[at] == kept).tolist(), scores[at].tolist()))
    return [make(item, -negative, {source: values[n] for source, hits, values in placed if hits[n]})
            for n, (negative, item, _) in enumerate(ranked)]


def _best(fused: np.ndarray, items: np.ndarray, ids: list[str], first: int) -> np.ndarray:
    """Positions of the `first` highest fused scores; among equal scores at the cut, the lower ids (string
    order)."""
    if len(fused) <= first:
        return np.arange(len(fused))
    cut = -np.partition(-fused, first - 1)[first - 1]
    above = np.flatnonzero(fused > cut)
    level = np.flatnonzero(fused == cut)
    level = level[np.argsort([ids[c] for c in items[level].tolist()], kind="stable")]
    return np.concatenate([above, level[: first - len(above)]])
