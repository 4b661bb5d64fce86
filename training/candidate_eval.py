"""Our candidate generation as a Recommender, so the evaluation harness can put it beside the peers.

`fit` trains the two-tower model on the split's training rows, builds the FAISS index over every
catalog item and the candidate tables; `recommend` runs the merged sources for each user with their
training history as recent items and consumed set. `TwoTowerANN` is the collaborative source alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from embeddings.index import ItemIndex
from embeddings.train import TrainConfig, Trained, item_vectors, train_frame, user_vectors
from recsys.pipeline.candidates import CandidateGenerator, Quotas, build_tables


class MergedCandidates:
    name = "candidates (merged)"

    def __init__(self, items: pd.DataFrame, config: TrainConfig = TrainConfig(), quotas: Quotas = Quotas(),
                 nprobe: int = 32) -> None:
        self.items, self.config, self.quotas, self.nprobe = items, config, quotas, nprobe
        self.trained: Trained | None = None
        self.generator: CandidateGenerator | None = None
        self.history: dict[str, list[str]] = {}
        self.user_matrix: dict[str, np.ndarray] = {}

    def fit(self, train: pd.DataFrame) -> None:
        train = train.sort_values("event_time")
        self.trained = train_frame(self.items, train, self.config, progress=print)
        vectors = item_vectors(self.trained, self.items)
        ids = list(self.items["item_id"])
        end = pd.Timestamp(train["event_time"].max()).to_pydatetime()
        index = ItemIndex.build(vectors, ids, model_version=self.trained.version,
                                data_start=pd.Timestamp(train["event_time"].min()).to_pydatetime(), data_end=end)
        self.generator = CandidateGenerator(build_tables(self.items, train, index, vectors, end), self.quotas,
                                            nprobe=self.nprobe)
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


class TwoTowerANN(MergedCandidates):
    """The collaborative source alone: nearest items to the user's embedding."""

    name = "two-tower ANN"

    def __init__(self, items: pd.DataFrame, config: TrainConfig = TrainConfig(), nprobe: int = 32) -> None:
        super().__init__(items, config, Quotas(collaborative=1000, content=0, popularity=0, trending=0), nprobe)
