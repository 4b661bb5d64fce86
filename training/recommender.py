"""The one recommender interface, and the matrix plumbing every implementation shares.

A recommender learns from a frame of positive (user_id, item_id, event_time[, weight]) rows and
returns, per user, up to ``k`` item ids, best first. The contract, tested once for every
implementation in ``tests/training/test_peers.py``:

* an item the user has in the training frame is never recommended;
* a user the model has never seen gets the most popular items (cold start, not an error);
* asking for more than the catalog holds returns what exists (no padding, no duplicates);
* the same training frame gives the same answer on every run.

:class:`MatrixRecommender` implements all of that once: it encodes ids to matrix rows and columns
(column order = popularity rank, so ties between scores always fall to the more popular item) and
turns a subclass's dense score block into exact top-k lists, batched over users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import InvalidInputError
from recsys.models.neighbours import BLOCK_CELLS  # the bound on one dense block's cells, scoring too


@runtime_checkable
class Recommender(Protocol):
    """What the evaluation harness (and later, serving) needs from a candidate generator."""

    name: str

    def fit(self, train: pd.DataFrame) -> None:
        """Learn from positives: columns user_id, item_id, event_time and optionally weight."""
        ...

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        """Up to ``k`` unseen item ids per user, best first; unknown users get the most popular."""
        ...


@dataclass(frozen=True)
class InteractionMatrix:
    """Training positives as a user × item CSR matrix, with the id ↔ index maps."""

    users: np.ndarray  # user ids, sorted; row i is users[i]
    items: np.ndarray  # item ids by descending popularity (ties by id); column j is items[j]
    user_index: dict[str, int]
    weights: sp.csr_matrix  # float32, the summed `weight` column (1.0 per row when absent)
    binary: sp.csr_matrix  # float32, 1.0 wherever the user has the item

    @classmethod
    def from_frame(cls, train: pd.DataFrame) -> InteractionMatrix:
        missing = {"user_id", "item_id"} - set(train.columns)
        if missing:
            raise InvalidInputError(f"training frame lacks column(s) {sorted(missing)}; need user_id, item_id")
        if train.empty:
            raise InvalidInputError("training frame is empty; a recommender needs at least one positive")
        user_codes, users = pd.factorize(train["user_id"].astype(str), sort=True)
        item_ids = train["item_id"].astype(str)
        counts = item_ids.groupby(item_ids).size()  # rows per item; index sorted by id
        by_popularity = counts.reset_index(name="n").sort_values(["n", "item_id"], ascending=[False, True],
                                                                 kind="stable")
        items = by_popularity["item_id"].to_numpy(dtype=object)
        item_codes = pd.Index(items).get_indexer(item_ids)
        values = (train["weight"].to_numpy(dtype=np.float32) if "weight" in train.columns
                  else np.ones(len(train), dtype=np.float32))
        shape = (len(users), len(items))
        weights = sp.csr_matrix((values, (user_codes, item_codes)), shape=shape, dtype=np.float32)
        weights.sum_duplicates()
        binary = weights.copy()
        binary.data[:] = 1.0
        users_arr = np.asarray(users, dtype=object)
        return cls(users_arr, items, {u: i for i, u in enumerate(users_arr)}, weights, binary)


class MatrixRecommender:
    """Base for recommenders that score every item for a block of known users."""

    name = "matrix"

    def __init__(self) -> None:
        self._data: InteractionMatrix | None = None

    @property
    def data(self) -> InteractionMatrix:
        if self._data is None:
            raise InvalidInputError(f"{self.name} is not fitted; call fit(train) before recommend")
        return self._data

    def fit(self, train: pd.DataFrame) -> None:
        self._data = InteractionMatrix.from_frame(train)
        self._fit(self._data)

    def _fit(self, data: InteractionMatrix) -> None:
        """Learn the model from the encoded matrix."""
        raise NotImplementedError

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        """Dense (len(rows) × items) scores, higher is better; seen items are masked by the caller."""
        raise NotImplementedError

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        if k < 0:
            raise InvalidInputError(f"k must be >= 0, got {k}")
        data = self.data
        popular = [str(i) for i in data.items[:k]]
        result = {u: list(popular) for u in users}  # cold start: the most popular items
        known = [u for u in dict.fromkeys(users) if u in data.user_index]
        if k == 0 or not known:
            return result
        rows = np.fromiter((data.user_index[u] for u in known), dtype=np.int64, count=len(known))
        batch = max(1, BLOCK_CELLS // max(1, data.binary.shape[1]))
        for start in range(0, len(rows), batch):
            block = rows[start:start + batch]
            for row, cols in zip(block, self._top_columns(block, k)):
                result[str(data.users[row])] = self._pad([str(i) for i in data.items[cols]], int(row), k)
        return result

    def _top_columns(self, rows: np.ndarray, k: int) -> list[np.ndarray]:
        """Column indices of each row's top-k unseen items; overridden by models with their own top-k."""
        scores = np.asarray(self._scores(rows), dtype=np.float64)
        seen = self.data.binary[rows]
        scores[np.repeat(np.arange(len(rows)), np.diff(seen.indptr)), seen.indices] = -np.inf
        return top_k(scores, k)

    def _pad(self, picked: list[str], row: int, k: int) -> list[str]:
        """Fill a short list with the most popular items the user has not seen nor been given."""
        if len(picked) >= k:
            return picked
        data = self.data
        taken = set(picked) | {str(i) for i in data.items[data.binary[row].indices]}
        extra = (str(i) for i in data.items if str(i) not in taken)
        return picked + [i for _, i in zip(range(k - len(picked)), extra)]


def top_k(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row, the columns of the k highest finite scores, best first; ties go to the lower column.

    Exact and vectorised: one partition finds each row's k-th score, then the rows' strictly better
    columns plus the first tied ones make exactly k, sorted by (score desc, column asc).
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k == 0 or n_rows == 0:
        return [np.empty(0, dtype=np.int64) for _ in range(n_rows)]
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    better = scores > kth
    tied = scores == kth
    room = k - better.sum(axis=1, keepdims=True)
    chosen = better | (tied & (np.cumsum(tied, axis=1) <= room))
    cols = np.nonzero(chosen)[1].reshape(n_rows, k)
    picked = np.take_along_axis(scores, cols, axis=1)
    order = np.lexsort((cols, -picked), axis=1)
    cols = np.take_along_axis(cols, order, axis=1)
    finite = np.isfinite(np.take_along_axis(picked, order, axis=1))
    return [c[f] for c, f in zip(cols, finite)]
