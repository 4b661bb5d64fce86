"""Offline: the newest ranker beside the one in service, on the same held-out interactions.

The held-out interactions are the evaluation harness's (`training.evaluation.split_for`, as `recsys evaluate`
and the ranker's own hold-out metrics use them): each user's latest 20% of positives (every action but skip)
is their test part, a seeded sample of `monitoring.quality_offline_users` users. Each user's list is asked for
one second after their last training positive (`training.ranker_data.request_times`). Candidates come from the
candidate artifact being served (`models/CURRENT`), asked as serving asks it (`Retriever`), with the user's
training positives as history and, as the user vector, the fold-in of those items (the nightly user vectors
may have seen the test part). Features are joined point in time at the request time through each ranker's
feature service (`training.ranker_data.with_features`, the code training uses). Each ranker re-ranks the top
`serving.rank_depth` candidates; a user's list is its top k, and the test positives are what is relevant,
those the candidates missed included (placed after the list: misses count, as in the harness).

Both versions see the same candidates, features and relevance, so a difference is the rankers'. The served
candidate artifact, its popularity tables and a ranker trained on all the data may have seen the test part:
absolute numbers can be optimistic; the comparison between versions is fair.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd

from bento_services.pipeline.features import service_of
from bento_services.pipeline.retrieve import Retriever, current_folder, load_serving_tables
from bento_services.pipeline.score import candidate_scores
from recsys.errors import RecsysError
from recsys.features.store import open_feature_store
from recsys.private.bentoml import model_store
from recsys.settings import Settings
from recsys.stores.lake import Lake
from training.evaluation import split_for
from training.ranker_data import candidate_lists, request_times, with_features

RANKER = "ranker"  # recsys.models.ranker.MODEL_NAME, without importing torch at import time


class NothingToCompareError(RecsysError):
    """No ranker, no candidate artifact or no held-out day: the offline comparison cannot run."""


@dataclass(frozen=True)
class Holdout:
    at: dict[str, pd.Timestamp]  # each user's request time: one second after their last training positive
    history: pd.DataFrame  # the sampled users' training positives (user_id, item_id, event_time), oldest first
    relevant: dict[str, set[str]]  # their test positives


def holdout(lake_root: Path, users: int, seed: int = 0) -> Holdout:
    """The harness's temporal split of the lake's positives, for a seeded sample of `users` of its test users."""
    table = Lake(lake_root).interactions(columns=["user_id", "item_id", "event_time", "action_type", "value"])
    if table.num_rows == 0:
        raise NothingToCompareError(f"the lake at {lake_root} has no interactions to hold out")
    train, test = split_for(table, validation=False)
    relevant = test[test["user_id"].isin(set(train["user_id"]))].groupby("user_id")["item_id"].agg(set).to_dict()
    if not relevant:
        raise NothingToCompareError("no user has both training and held-out positives in the lake")
    chosen = sorted(relevant)
    if len(chosen) > users:
        chosen = sorted(np.random.default_rng(seed).choice(chosen, size=users, replace=False).tolist())
    history = train[train["user_id"].isin(set(chosen))]
    return Holdout(request_times(history), history, {u: relevant[u] for u in chosen})


def ranker_versions(home: Path | None = None) -> list[str]:
    """The rankers in the model store, newest first."""
    try:
        stored = bentoml.models.list(RANKER, _model_store=model_store(home))
    except bentoml.exceptions.NotFound:  # no ranker was ever saved
        return []
    return [str(m.tag.version) for m in sorted(stored, key=lambda m: m.info.creation_time, reverse=True)]


def serving_version(log: pd.DataFrame, known: list[str]) -> str | None:
    """The ranker that answered most of the logged requests (None when the log names none of `known`)."""
    counts = Counter(v for v in log.get("model_version", pd.Series(dtype=str)) if v in set(known))
    return counts.most_common(1)[0][0] if counts else None


class ArtifactCandidates:
    """`training.ranker_data.ScoredSource` over the served candidate artifact (or the `models/<version>` folder
    given), for users with a given history."""

    def __init__(self, settings: Settings, history: pd.DataFrame, folder: Path | None = None) -> None:
        tables = load_serving_tables(settings, folder or current_folder(settings))
        if tables.tables is None:
            raise NothingToCompareError(f"no usable candidate artifact ({tables.error}); run `recsys build-candidates`")
        self.version = tables.version
        self.retriever = Retriever(tables.tables, settings.serving.nprobe)
        self.history = history.groupby("user_id", sort=False)["item_id"].agg(list).to_dict()

    def scored(self, user: str, depth: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        history = self.history.get(user, [])
        vector = self.retriever.fold_in(history)
        found = self.retriever.retrieve(vector, history, set(history), [])[:depth]
        ids = [c.item_id for c in found]
        return ids, candidate_scores(found), self.retriever.embedding_scores(vector, ids).astype(np.float64)


def ranked_lists(settings: Settings, held: Holdout, versions: list[str], k: int,
                 home: Path | None = None) -> dict[str, pd.DataFrame]:
    """Per ranker version, the lists frame (`monitoring.recsys_metrics.LIST_COLUMNS`, one list per user) of
    its top k on the held-out users, then the relevant items it did not place in its top k."""
    from recsys.models.ranker import load_ranker  # torch: only when a comparison runs

    source = ArtifactCandidates(settings, held.history)
    users = sorted(held.relevant)
    lists = candidate_lists(source, users, held.at, held.relevant, settings.serving.rank_depth)
    store = open_feature_store(settings)
    examples: dict[str, pd.DataFrame] = {}
    out = {}
    for version in versions:
        ranker = load_ranker(f"{RANKER}:{version}", home)
        service = service_of(ranker)
        if service not in examples:
            examples[service] = with_features(store, lists, service)
        rows = examples[service]
        scores = ranker.score_lists(rows, rows["candidate_score"].to_numpy(), rows["embedding_score"].to_numpy(),
                                    rows["list_id"].to_numpy())
        out[version] = _top_k(rows.assign(score=scores), held.relevant, k)
    return out


def _top_k(scored: pd.DataFrame, relevant: dict[str, set[str]], k: int) -> pd.DataFrame:
    ordered = scored.sort_values(["user_id", "score"], ascending=[True, False], kind="stable")
    ordered = ordered.assign(rank=ordered.groupby("user_id").cumcount() + 1)
    ordered["target"] = [float(i in relevant.get(u, ())) for u, i in zip(ordered["user_id"], ordered["item_id"])]
    kept = ordered[(ordered["rank"] <= k) | (ordered["target"] > 0)]
    depth = int(ordered["rank"].max()) if len(ordered) else 0
    listed = set(zip(ordered["user_id"], ordered["item_id"]))
    floor = float(ordered["score"].min()) - 1.0 if len(ordered) else 0.0
    missed = [(u, i) for u in sorted(relevant) for i in sorted(relevant[u]) if (u, i) not in listed]
    misses = pd.DataFrame({"user_id": [u for u, _ in missed], "item_id": [i for _, i in missed]})
    misses["rank"] = depth + 1 + misses.groupby("user_id").cumcount() if len(misses) else 0
    misses = misses.assign(score=floor, target=1.0)
    parts = [kept[["user_id", "item_id", "rank", "score", "target"]], misses]
    frame = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    return frame.assign(list_id=frame["user_id"])[["list_id", "user_id", "item_id", "rank", "score", "target"]]
