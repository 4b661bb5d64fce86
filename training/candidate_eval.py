"""Our candidate generation as a Recommender, so the evaluation harness can put it beside the peers.

`MergedCandidates.fit` trains the two-tower model on the split's training rows, builds the FAISS
index over the items present in those rows (the universe every model of the table recommends from),
the item-to-item neighbours and the candidate tables; `recommend` runs the merged sources for each
user with their training history as recent items and consumed set. `Variant` runs other quotas and
fusion weights over the same fitted tables (the tuning search), and `SourceAlone` one source by itself
(e.g. the two-tower ANN), so the table costs one training run; `TwoTowerANN` fits its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from embeddings.train import TrainConfig, Trained, item_vectors, train_frame, user_vectors
from recsys.models.candidates import CandidateGenerator, CandidateTables, FusionWeights, Quotas, build_tables
from recsys.models.item_index import ItemIndex
from recsys.models.neighbours import ItemNeighbours

SOURCES = ("collaborative", "similar_items", "content", "popularity", "trending")


class MergedCandidates:
    name = "candidates (merged)"

    def __init__(self, items: pd.DataFrame, config: TrainConfig = TrainConfig(), quotas: Quotas = Quotas(),
                 nprobe: int = 32, weights: FusionWeights = FusionWeights()) -> None:
        self.items, self.config, self.quotas, self.nprobe, self.weights = items, config, quotas, nprobe, weights
        self.trained: Trained | None = None
        self.tables: CandidateTables | None = None
        self.generator: CandidateGenerator | None = None
        self.fitted_on: pd.DataFrame | None = None
        self.history: dict[str, list[str]] = {}
        self.user_matrix: dict[str, np.ndarray] = {}

    def fit(self, train: pd.DataFrame) -> None:
        self.fitted_on = train
        train = train.sort_values("event_time", kind="stable")
        self.trained = train_frame(self.items, train, self.config, progress=print)
        # The universe: items present in the training rows (a catalog item first seen later is not known yet).
        universe = self.items[self.items["item_id"].astype(str).isin(set(train["item_id"].astype(str)))]
        vectors = item_vectors(self.trained, universe)
        ids = list(universe["item_id"])
        end = pd.Timestamp(train["event_time"].max()).to_pydatetime()
        index = ItemIndex.build(vectors, ids, model_version=self.trained.version,
                                data_start=pd.Timestamp(train["event_time"].min()).to_pydatetime(), data_end=end)
        neighbours = (ItemNeighbours.build(train, model_version=self.trained.version)
                      if self.quotas.similar_items else None)
        self.tables = build_tables(universe, train, index, vectors, end, neighbours=neighbours)
        self.generator = CandidateGenerator(self.tables, self.quotas, nprobe=self.nprobe, weights=self.weights)
        self.history = train.groupby("user_id")["item_id"].agg(list).to_dict()
        users = list(self.history)
        matrix = user_vectors(self.trained, users, [self.history[u] for u in users])
        self.user_matrix = dict(zip(users, matrix))

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        assert self.generator is not None, "fit first"
        return _lists(self.generator, self, users, k)


def _lists(generator: CandidateGenerator, fitted: MergedCandidates, users: Sequence[str],
           k: int) -> dict[str, list[str]]:
    """Each user's candidates, with their training history as recent items and as the consumed set."""
    out = {}
    for user in users:
        seen = fitted.history.get(user, [])
        found = generator.generate(fitted.user_matrix.get(user), seen, set(seen), k=k)
        out[user] = [c.item_id for c in found]
    return out


class Variant:
    """Other quotas and fusion weights over a fitted `MergedCandidates`'s tables: no training of its own when
    the parent was fitted on the same frame (the harness fits recommenders in order: list the parent first)."""

    def __init__(self, parent: MergedCandidates, name: str, quotas: Quotas,
                 weights: FusionWeights = FusionWeights()) -> None:
        self.parent, self.name, self.quotas, self.weights = parent, name, quotas, weights
        self.generator: CandidateGenerator | None = None

    def fit(self, train: pd.DataFrame) -> None:
        if self.parent.fitted_on is not train:
            self.parent.fit(train)
        assert self.parent.tables is not None
        self.generator = CandidateGenerator(self.parent.tables, self.quotas, nprobe=self.parent.nprobe,
                                            weights=self.weights)

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        assert self.generator is not None, "fit first"
        return _lists(self.generator, self.parent, users, k)


class SourceAlone(Variant):
    """One source of a `MergedCandidates` by itself, with the whole list as its quota."""

    def __init__(self, parent: MergedCandidates, source: str, name: str) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
        super().__init__(parent, name, Quotas(**{s: 1000 if s == source else 0 for s in SOURCES}))
        self.source = source


class TwoTowerANN(MergedCandidates):
    """The collaborative source alone: nearest items to the user's embedding."""

    name = "two-tower ANN"

    def __init__(self, items: pd.DataFrame, config: TrainConfig = TrainConfig(), nprobe: int = 32) -> None:
        super().__init__(items, config, Quotas(collaborative=1000, similar_items=0, content=0, popularity=0,
                                               trending=0), nprobe)
