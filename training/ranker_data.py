"""Ranker examples: each user's candidate list at one moment, labelled by what the user took next.

A list is what serving would have ranked for the user at ``request_time`` (the moment right after
the history the candidate generator was fitted on): the top ``depth`` merged candidates with their
fusion score and the two-tower user-item inner product. Candidates the user interacted with after
that moment are the positives; the other candidates, which the user did not take, are the negatives
(hard negatives, drawn from the same distribution serving ranks). Features are joined point in time
through the feature service at ``request_time``, so no example sees anything after its moment.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
from feast import FeatureStore

from embeddings.train import item_vectors
from recsys.features.service import RANKER_SERVICE
from training.candidate_eval import MergedCandidates
from training.training_set import build_training_set

LIST_COLUMNS = ["list_id", "user_id", "item_id", "event_timestamp", "candidate_score", "embedding_score", "label"]


class ScoredSource(Protocol):
    def scored(self, user: str, depth: int) -> tuple[list[str], np.ndarray, np.ndarray]: ...


class CandidateSource:
    """A fitted `MergedCandidates` answering scored lists: (item, fusion score, embedding score)."""

    def __init__(self, fitted: MergedCandidates, items: pd.DataFrame) -> None:
        assert fitted.trained is not None and fitted.generator is not None, "fit the candidates first"
        self.fitted = fitted
        vectors = item_vectors(fitted.trained, items)
        self.item_row = {str(i): r for r, i in enumerate(items["item_id"])}
        self.vectors = vectors

    def scored(self, user: str, depth: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The user's top ``depth`` candidates, their fusion scores and embedding scores (0: no vector)."""
        fitted = self.fitted
        assert fitted.generator is not None
        seen = fitted.history.get(user, [])
        user_vector = fitted.user_matrix.get(user)
        found = fitted.generator.generate(user_vector, seen, set(seen), k=depth)
        ids = [c.item_id for c in found]
        scores = np.array([c.score for c in found], dtype=np.float64)
        embedding = np.zeros(len(ids), dtype=np.float64)
        if user_vector is not None and ids:
            rows = np.array([self.item_row.get(i, -1) for i in ids])
            known = rows >= 0
            embedding[known] = self.vectors[rows[known]] @ np.asarray(user_vector, dtype=np.float32)
        return ids, scores, embedding


def request_times(history: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Per user, one second after their last event in ``history``: when their next list is asked for."""
    last = pd.to_datetime(history.groupby("user_id")["event_time"].max(), utc=True)
    return {str(u): t + pd.Timedelta(seconds=1) for u, t in last.items()}


def candidate_lists(source: ScoredSource, users: Sequence[str], at: Mapping[str, pd.Timestamp],
                    relevant: Mapping[str, Collection[str]], depth: int) -> pd.DataFrame:
    """One row per (user, candidate) with `LIST_COLUMNS`; `label` is 1 for items in ``relevant``."""
    parts = []
    for list_id, user in enumerate(users):
        ids, scores, embedding = source.scored(user, depth)
        wanted = relevant.get(user, ())
        parts.append(pd.DataFrame({
            "list_id": list_id, "user_id": user, "item_id": ids, "event_timestamp": at[user],
            "candidate_score": scores, "embedding_score": embedding,
            "label": np.fromiter((i in wanted for i in ids), dtype=np.int64, count=len(ids)),
        }))
    if not parts:
        return pd.DataFrame(columns=LIST_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def with_features(store: FeatureStore, lists: pd.DataFrame, service: str = RANKER_SERVICE) -> pd.DataFrame:
    """The lists with the service's features as of each row's `event_timestamp` (typed defaults filled)."""
    labelled = lists[["user_id", "item_id", "event_timestamp", "label"]]
    joined = build_training_set(store, labelled, service).frame
    features = joined.drop(columns=[c for c in labelled.columns])
    return pd.concat([lists.reset_index(drop=True), features.reset_index(drop=True)], axis=1)
