"""Our candidate generation as a Recommender, so the evaluation harness can put it beside the peers.

`MergedCandidates.fit` trains the two-tower model on the split's training rows, builds the FAISS
index over every catalog item, the item-to-item neighbours and the candidate tables; `recommend`
runs the merged sources for each user with their training history as recent items and consumed
set. `SourceAlone` shows one source by itself (e.g. the two-tower ANN) from the same fitted model,
so the table costs one training run; `TwoTowerANN` fits its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from embeddings.train import TrainConfig, Trained, item_vectors, train_frame, user_vectors
from recsys.models.candidates import CandidateGenerator, CandidateTables, Quotas, build_tables
from recsys.models.item_index import ItemIndex
from recsys.models.neighbours import ItemNeighbours

SOURCES = ("collaborative", "similar_items", "content", "popularity", "trending")


class MergedCandidates:
    name = "candidates (merged)"

    def __init__(self, items: pd.DataFrame, config: TrainConfig = TrainConfig(), quotas: Quotas = Quotas(),
                 nprobe: int = 32) -> None:
        self.items, self.config, self.quotas, self.nprobe = items, config, quotas, nprobe
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
        vectors = item_vectors(self.trained, self.items)
        ids = list(self.items["item_id"])
        end = pd.Timestamp(train["event_time"].max()).to_pydatetime()
        index = ItemIndex.build(vectors, ids, model_version=self.trained.version,
                                data_start=pd.Timestamp(train["event_time"].min()).to_pydatetime(), data_end=end)
        neighbours = (ItemNeighbours.build(train, model_version=self.trained.version)
                      if self.quotas.similar_items else None)
        self.tables = build_tables(self.items, train, index, vectors, end, neighbours=neighbours)
        self.generator = CandidateGenerator(self.tables, self.quotas, nprobe=self.nprobe)
        self.history = train.groupby("user_id")["item_id"].agg(list).to_dict()
        users = list(self.history)
        matrix = user_vectors(self.trained, users, [self.history[u] for u in users])
        self.user_matrix = dict(zip(users, matrix))

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        assert self.generator is not None, "fit first"
        out = {}
        for user in users:
            seen = self.history.get(user, [])
            found = self.generator.generate(self.user_matrix.get(user), seen, set(seen), k=k)
            out[user] = [c.item_id for c in found]
        return out


class SourceAlone:
    """One source of a `MergedCandidates` by itself, with the whole list as its quota.

    Fitting reuses the parent's model and tables when the parent was fitted on the same frame
    (the harness fits recommenders in order, so list the parent first).
    """

    def __init__(self, parent: MergedCandidates, source: str, name: str) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
        self.parent, self.source, self.name = parent, source, name
        self.generator: CandidateGenerator | None = None

    def fit(self, train: pd.DataFrame) -> None:
        if self.parent.fitted_on is not train:
            self.parent.fit(train)
        assert self.parent.tables is not None
        quotas = Quotas(**{s: 1000 if s == self.source else 0 for s in SOURCES})
        self.generator = CandidateGenerator(self.parent.tables, quotas, nprobe=self.parent.nprobe)

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        assert self.generator is not None, "fit first"
        out = {}
        for user in users:
            seen = self.parent.history.get(user, [])
            found = self.generator.generate(self.parent.user_matrix.get(user), seen, set(seen), k=k)
            out[user] = [c.item_id for c in found]
        return out


class TwoTowerANN(MergedCandidates):
    """The collaborative source alone: nearest items to the user's embedding."""

    name = "two-tower ANN"

    def __init__(self, items: pd.DataFrame, config: TrainConfig = TrainConfig(), nprobe: int = 32) -> None:
        super().__init__(items, config, Quotas(collaborative=1000, similar_items=0, content=0, popularity=0,
                                               trending=0), nprobe)
