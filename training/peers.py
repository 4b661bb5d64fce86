"""Baseline recommenders: the peers every new model must beat before it is worth serving.

Each is one class behind :class:`training.recommender.Recommender`, sharing the encoding, seen-item
filtering, cold start and exact top-k of :class:`~training.recommender.MatrixRecommender`:

* :class:`Popularity` — the most interacted items; the floor.
* :class:`ItemKNN` — cosine item-item similarity on the binary matrix, top-N neighbours per item.
* :class:`EASE` — Steck (2019), a closed-form linear item-item model; strong on small catalogs.
* :class:`ALS` — implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008) via ``implicit``.

Popularity, ItemKNN and EASE are deterministic (the same training frame gives the same lists); ALS
depends on its seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.errors import InvalidInputError
from recsys.models.neighbours import cosine_blocks, ease_weights
from training.recommender import InteractionMatrix, MatrixRecommender, Recommender, top_k

__all__ = ["ALS", "EASE", "CatalogTooLargeError", "ItemKNN", "Popularity", "Recommender", "default_peers"]


_FILTERED = -1e30  # implicit scores filtered items with -FLT_MAX or -inf


class CatalogTooLargeError(InvalidInputError):
    """A model that needs a dense items × items matrix was given more items than its limit."""


class Popularity(MatrixRecommender):
    """Every user gets the items most users interacted with, minus those they already have."""

    name = "popularity"
    deterministic = True  # the same lists from the same frame: one run, whatever the seed

    def _fit(self, data: InteractionMatrix) -> None:
        # Columns are already in popularity order, so the score is just the negated column index.
        self._rank = -np.arange(data.binary.shape[1], dtype=np.float64)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return np.tile(self._rank, (len(rows), 1))


class ItemKNN(MatrixRecommender):
    """Score = sum of cosine similarities between an item and the user's items (top-N neighbours kept)."""

    name = "itemknn"
    deterministic = True  # the same lists from the same frame: one run, whatever the seed

    def __init__(self, neighbours: int = 100) -> None:
        super().__init__()
        if neighbours < 1:
            raise InvalidInputError(f"ItemKNN neighbours must be >= 1, got {neighbours}")
        self.neighbours = neighbours
        self.similarity: sp.csr_matrix | None = None

    def _fit(self, data: InteractionMatrix) -> None:
        """Row j of the similarity holds j's N most similar items; built in blocks of item rows."""
        n_items = data.binary.shape[1]
        indptr, indices, values = [0], [], []
        for _, sim in cosine_blocks(data.binary):
            for row_sims, cols in zip(sim, top_k(sim, self.neighbours)):
                cols = cols[row_sims[cols] > 0]
                indices.append(cols)
                values.append(row_sims[cols])
                indptr.append(indptr[-1] + len(cols))
        self.similarity = sp.csr_matrix(
            (np.concatenate(values) if values else [], np.concatenate(indices) if indices else [], indptr),
            shape=(n_items, n_items), dtype=np.float64,
        )

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        assert self.similarity is not None
        return np.asarray((self.data.binary[rows] @ self.similarity).toarray())


class EASE(MatrixRecommender):
    """Embarrassingly Shallow Autoencoder: B = I - P / diag(P), P = (XᵀX + λI)⁻¹, diag(B) = 0."""

    name = "ease"
    deterministic = True  # the same lists from the same frame: one run, whatever the seed

    def __init__(self, l2: float = 500.0, max_items: int = 20_000) -> None:
        super().__init__()
        self.l2 = l2
        self.max_items = max_items
        self.weights: np.ndarray | None = None

    def _fit(self, data: InteractionMatrix) -> None:
        n_items = data.binary.shape[1]
        if n_items > self.max_items:
            gib = 3 * n_items * n_items * 8 / 2**30
            raise CatalogTooLargeError(
                f"EASE needs dense {n_items:,} × {n_items:,} matrices (about {gib:.1f} GiB) but max_items is "
                f"{self.max_items:,}; use ItemKNN or ALS for this catalog, or raise max_items if memory allows"
            )
        self.weights = ease_weights(data.binary, self.l2)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        assert self.weights is not None
        return np.asarray(self.data.binary[rows] @ self.weights)


class ALS(MatrixRecommender):
    """``implicit``'s CPU alternating least squares (Hu, Koren, Volinsky 2008) on the weight matrix.

    ``implicit`` takes each stored cell as the confidence of a preference of 1 (unstored cells:
    preference 0, confidence 1) after scaling by ``alpha``. So observed cells get confidence
    ``alpha · weight``. ``alpha`` = 1.0 (uniform confidence on binary positives) did better than 5–40
    on a validation split carved from the MovieLens training data (Recall@20/100/1000, NDCG@10).
    Top-k and seen-item filtering use ``implicit``'s own batched ``recommend``.
    """

    name = "als"

    def __init__(self, factors: int = 64, iterations: int = 15, regularization: float = 0.05,
                 alpha: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.factors, self.iterations, self.regularization = factors, iterations, regularization
        self.alpha, self.seed = alpha, seed
        self.model: object | None = None

    def _fit(self, data: InteractionMatrix) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):  # implicit parallelises itself; a BLAS pool on top slows it
            model = AlternatingLeastSquares(
                factors=self.factors, iterations=self.iterations, regularization=self.regularization,
                alpha=self.alpha, random_state=self.seed,
            )
            model.fit(data.weights, show_progress=False)
        self.model = model

    def _top_columns(self, rows: np.ndarray, k: int) -> list[np.ndarray]:
        assert self.model is not None
        n = min(k, self.data.binary.shape[1])
        ids, scores = self.model.recommend(  # type: ignore[attr-defined]
            rows, self.data.weights[rows], N=n, filter_already_liked_items=True
        )
        ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
        seen = self.data.binary[rows]
        # When N reaches past the unseen items, implicit fills the tail with filtered ones: drop them.
        return [row_ids[(row_ids >= 0) & np.isfinite(row_scores) & (row_scores > _FILTERED)
                        & ~np.isin(row_ids, seen.indices[seen.indptr[i]:seen.indptr[i + 1]])]
                for i, (row_ids, row_scores) in enumerate(zip(ids, scores))]


def default_peers(seed: int = 0, params: Mapping[str, Mapping[str, Any]] | None = None) -> list[Recommender]:
    """The baselines the evaluation runs, cheapest first; ``params`` (by name, from `training.tuning`) set their
    hyper-parameters, ``seed`` ALS's initialisation."""
    chosen = params or {}
    return [Popularity(), ItemKNN(**chosen.get("itemknn", {})), EASE(**chosen.get("ease", {})),
            ALS(**{**chosen.get("als", {}), "seed": seed})]
