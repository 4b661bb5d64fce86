"""Item-to-item neighbours: "items similar to the ones you just had", learned from co-consumption.

Built offline from the training interactions (``ItemNeighbours.build``) and served as a candidate
source: a user's score for item j is the sum, over their recent items i, of weight(i → j), newer
items counting more. Each item keeps only its ``neighbours`` strongest links, so the artifact is a
sparse items × items matrix whatever the model it came from:

* ``ease`` (catalogs up to ``max_dense_items`` items seen in training): the weights of Steck's
  EASE (2019), B = I - P / diag(P) with P = (XᵀX + λI)⁻¹ — the strongest item-item model on
  small catalogs, but its inverse is dense;
* ``cosine`` (larger catalogs): cosine similarity of the items' user sets, computed in blocks.

The defaults (1,000 neighbours, λ = 300, newer items counting 0.97 times less per step back, set in
`CandidateGenerator`) did best on a validation split carved from ml-latest-small's training part.
Saved as a self-describing folder: ``neighbours.npz`` (CSR), ``item_ids.json`` and ``meta.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from recsys.errors import InvalidInputError, RecsysError

FILES = ("neighbours.npz", "item_ids.json", "meta.json")
BLOCK_CELLS = 16_000_000  # dense cells per block of the cosine build; bounds peak memory


#: Catalogs up to this size sum neighbour weights into a dense vector; larger ones sort unique columns.
DENSE_SUM_ITEMS = 200_000

class NeighboursArtifactError(RecsysError):
    """A saved neighbours folder is missing a file or its parts disagree; rebuild it."""

    http_status = 500


@dataclass(frozen=True)
class NeighboursMeta:
    method: str  # "ease" or "cosine"
    neighbours: int
    l2: float
    item_count: int
    model_version: str
    data_start: str
    data_end: str
    created_at: str


class ItemNeighbours:
    """A sparse item → item weight matrix with its id mapping; row i holds i's strongest neighbours."""

    def __init__(self, item_ids: Sequence[str], weights: sp.csr_matrix, meta: NeighboursMeta) -> None:
        self.item_ids = [str(i) for i in item_ids]
        self.weights = weights.tocsr()
        self.meta = meta
        self._row = {item: row for row, item in enumerate(self.item_ids)}

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def build(
        cls, events: pd.DataFrame, *, neighbours: int = 1000, l2: float = 300.0, max_dense_items: int = 10_000,
        model_version: str = "", data_start: datetime | None = None, data_end: datetime | None = None,
    ) -> ItemNeighbours:
        """From (user_id, item_id) rows: EASE weights when the catalog fits dense matrices, else cosine."""
        if neighbours < 1:
            raise InvalidInputError(f"neighbours must be at least 1, got {neighbours}")
        if events.empty:
            raise InvalidInputError("no interactions to learn item neighbours from")
        user_codes, _ = pd.factorize(events["user_id"].astype(str))
        item_codes, items = pd.factorize(events["item_id"].astype(str), sort=True)
        x = sp.csr_matrix((np.ones(len(events), np.float32), (user_codes, item_codes)),
                          shape=(user_codes.max() + 1, len(items)))
        x.data[:] = 1.0  # duplicates summed above: back to binary
        method = "ease" if len(items) <= max_dense_items else "cosine"
        weights = _ease(x, l2, neighbours) if method == "ease" else _cosine(x, neighbours)
        times = pd.to_datetime(events["event_time"], utc=True) if "event_time" in events else None
        start = data_start or (times.min().to_pydatetime() if times is not None else datetime.now(UTC))
        end = data_end or (times.max().to_pydatetime() if times is not None else datetime.now(UTC))
        meta = NeighboursMeta(method, neighbours, l2 if method == "ease" else 0.0, len(items), model_version,
                              start.isoformat(), end.isoformat(), datetime.now(UTC).isoformat(timespec="seconds"))
        return cls(list(items), weights, meta)

    def similar(self, recent_items: Sequence[str], k: int, exclude: set[str] = frozenset(),  # type: ignore[assignment]
                recency: float = 1.0) -> list[tuple[str, float]]:
        """Top-``k`` items by summed weight from ``recent_items`` (newest last; each older one counts
        ``recency`` times the next), leaving out ``exclude``."""
        rows = np.fromiter((self._row[i] for i in recent_items if i in self._row), dtype=np.int64)
        excluded = np.fromiter((self._row[i] for i in exclude if i in self._row), dtype=np.int64)
        cols, values = self.similar_rows(rows, k, excluded, recency)
        return [(self.item_ids[c], float(v)) for c, v in zip(cols.tolist(), values.tolist())]

    def similar_rows(self, rows: np.ndarray, k: int, exclude: np.ndarray, recency: float = 1.0,
                     ) -> tuple[np.ndarray, np.ndarray]:
        """`similar` over rows of `item_ids` (the recent ones newest last, the excluded ones): the top-``k``
        rows and their summed weights (float64), best first (ties: the lower row first)."""
        if len(rows) == 0 or k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        age = np.arange(len(rows) - 1, -1, -1, dtype=np.float64)
        # The weighted sum of the recent items' rows: gather the rows, then add up per column (a sparse
        # 1 x n product costs several times more for the same work).
        picked = self.weights[np.asarray(rows)]
        contributions = picked.data * np.repeat(recency ** age, np.diff(picked.indptr))
        if len(self.item_ids) <= DENSE_SUM_ITEMS:
            summed = np.bincount(picked.indices, weights=contributions, minlength=len(self.item_ids))
            columns = np.flatnonzero(summed)
            totals = summed[columns]
        else:
            columns, inverse = np.unique(picked.indices, return_inverse=True)
            totals = np.bincount(inverse, weights=contributions)
        keep = (totals > 0) & ~np.isin(columns, exclude)
        cols, values = columns[keep], totals[keep]
        if len(cols) > k:
            top = np.argpartition(-values, k - 1)[:k]
            cols, values = cols[top], values[top]
        order = np.lexsort((cols, -values))
        return cols[order].astype(np.int64), values[order]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        sp.save_npz(folder / "neighbours.npz", self.weights)
        (folder / "item_ids.json").write_text(json.dumps(self.item_ids))
        (folder / "meta.json").write_text(json.dumps(asdict(self.meta), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ItemNeighbours:
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise NeighboursArtifactError(f"neighbours folder {folder} lacks {', '.join(missing)}")
        try:
            weights = sp.load_npz(folder / "neighbours.npz").tocsr()
            ids = json.loads((folder / "item_ids.json").read_text())
            meta = NeighboursMeta(**json.loads((folder / "meta.json").read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise NeighboursArtifactError(f"neighbours folder {folder} is unreadable: {error}") from error
        if not weights.shape == (len(ids), len(ids)) or len(ids) != meta.item_count:
            raise NeighboursArtifactError(f"neighbours folder {folder} is inconsistent: matrix {weights.shape}, "
                                          f"{len(ids)} item ids, meta item_count {meta.item_count}")
        return cls(ids, weights, meta)


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's closed form (Steck 2019): B = I - P / diag(P), P = (XᵀX + λI)⁻¹, diag(B) = 0; dense items × items."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    b = p / -np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def cosine_blocks(x: sp.csr_matrix) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Item-item cosine similarity of the binary matrix ``x`` (users × items), a dense block of item rows
    at a time (about BLOCK_CELLS cells), self-similarity zeroed: yields (item rows, block)."""
    n_items = x.shape[1]
    item_users = x.T.tocsr()
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).clip(min=1e-12)
    block = max(1, BLOCK_CELLS // max(1, n_items))
    for start in range(0, n_items, block):
        rows = np.arange(start, min(start + block, n_items))
        sim = (item_users[rows] @ x).toarray().astype(np.float64)
        sim /= norms[rows, None] * norms[None, :]
        sim[np.arange(len(rows)), rows] = 0.0
        yield rows, sim


def _ease(x: sp.csr_matrix, l2: float, neighbours: int) -> sp.csr_matrix:
    return _strongest(ease_weights(x, l2), neighbours)


def _cosine(x: sp.csr_matrix, neighbours: int) -> sp.csr_matrix:
    return sp.vstack([_strongest(sim, neighbours) for _, sim in cosine_blocks(x)]).tocsr()


def _strongest(block: np.ndarray, neighbours: int) -> sp.csr_matrix:
    """Keep each row's ``neighbours`` largest positive weights, as a sparse block of rows."""
    n = min(neighbours, block.shape[1])
    cols = np.argpartition(-block, n - 1, axis=1)[:, :n]
    values = np.take_along_axis(block, cols, axis=1)
    rows = np.repeat(np.arange(len(block)), n)
    keep = values.ravel() > 0
    return sp.csr_matrix((values.ravel()[keep].astype(np.float32), (rows[keep], cols.ravel()[keep])),
                         shape=block.shape)


def load_neighbours(folder: Path) -> ItemNeighbours | None:
    """The item-to-item neighbours of a model version folder; None when that version has none."""
    return ItemNeighbours.load(folder / "item_neighbours") if (folder / "item_neighbours").is_dir() else None
