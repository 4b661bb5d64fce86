"""Our candidate generation behind the Recommender interface, beside its sources shown alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embeddings.train import TrainConfig
from training.candidate_eval import MergedCandidates, SourceAlone

CONFIG = TrainConfig(epochs=1, batch_size=64, shuffle_buffer=200, seed=1)


def catalog() -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(40)], "title": [f"film {k}" for k in range(40)],
                         "category": [f"c{k % 4}" for k in range(40)], "tags": [[f"t{k % 4}"] for k in range(40)]})


def interactions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{4 * rng.integers(0, 10) + u % 4}") for u in range(30) for _ in range(12)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"]).drop_duplicates()
    return frame.assign(event_time=pd.date_range("2024-01-01", periods=len(frame), freq="h", tz="UTC"))


def test_merged_and_alone_share_one_fit_and_honour_the_contract() -> None:
    train = interactions()
    merged = MergedCandidates(catalog(), CONFIG)
    alone = SourceAlone(merged, "similar_items", "similar items")
    merged.fit(train)
    trained = merged.trained
    alone.fit(train)
    assert merged.trained is trained  # reused, not retrained
    users = ["u1", "u2", "stranger"]
    for model in (merged, alone):
        lists = model.recommend(users, k=15)
        for user in ("u1", "u2"):
            seen = set(train.loc[train["user_id"] == user, "item_id"])
            assert lists[user] and len(lists[user]) == len(set(lists[user])) <= 15
            assert not seen & set(lists[user])
    kind = {f"i{4 * k + 1}" for k in range(10)} - set(train.loc[train["user_id"] == "u1", "item_id"])
    assert set(alone.recommend(["u1"], k=len(kind))["u1"]) == kind  # u1's kind (only u1's kind co-occur)
    assert merged.recommend(["stranger"], k=10)["stranger"]  # cold start: popular and trending


def test_an_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown source"):
        SourceAlone(MergedCandidates(catalog(), CONFIG), "telepathy", "x")
