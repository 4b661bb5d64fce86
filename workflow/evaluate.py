"""Offline metrics of a candidate artifact (and its ranker) on the most recent held-out day.

The held-out day is the last day with events before the run's `as_of`. Its users who also have history before it
(a seeded sample of `pipeline.eval_users`) are asked for lists as serving asks: candidates from the artifact's
`Retriever` (every merged source), with the user's positives before the day as history and, as user vector, the
fold-in of those items (`monitoring.quality_offline.ArtifactCandidates`, the same for both versions, so the
nightly user vectors of the version in service, which may have seen the day, give it no edge). What the user took
that day (every action but skip, first time only) is relevant; misses count.

Metrics, per version: `ann_recall@K` (the two-tower index alone, queried with the fold-in vector),
`candidate_recall@K` and `candidate_ndcg@10` (merged candidates in fusion order), `ndcg@10` and `recall@10` of
the final lists (the top `serving.rank_depth` candidates re-ranked by the version's ranker; candidate order
without one). Popularity (most taken items before the day, the user's own left out) is measured beside them.
The popularity tables of both artifacts are read from the whole lake, as serving builds them: absolute numbers
can be optimistic, the comparison between versions is fair.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bento_services.pipeline.features import service_of
from monitoring.quality_offline import ArtifactCandidates, Holdout
from recsys.errors import InvalidInputError
from recsys.features.store import open_feature_store
from recsys.settings import Settings
from recsys.stores.lake import Lake
from training.evaluation import ndcg_at_k, positives, recall_at_k
from training.ranker_data import candidate_lists, request_times, with_features

FINAL_K = 10


def held_out_day(lake_root: Path, as_of: datetime) -> tuple[datetime, pd.DataFrame]:
    """(start of the last day with positives before `as_of`, every positive before `as_of`)."""
    table = Lake(lake_root).interactions(columns=["user_id", "item_id", "event_time", "action_type", "value"])
    frame = positives(table)
    frame = frame[frame["event_time"] < pd.Timestamp(as_of)]
    if frame.empty:
        raise InvalidInputError(f"no interactions in the lake at {lake_root} before {as_of.isoformat()}")
    start = frame["event_time"].max().floor("D")
    return start.to_pydatetime(), frame


def day_holdout(frame: pd.DataFrame, start: datetime, users: int, seed: int = 0) -> Holdout:
    """The day's relevant items of a seeded sample of its users who have history before it."""
    before = frame[frame["event_time"] < pd.Timestamp(start)]
    day = frame[frame["event_time"] >= pd.Timestamp(start)]
    relevant = day[day["user_id"].isin(set(before["user_id"]))].groupby("user_id")["item_id"].agg(set).to_dict()
    if not relevant:
        raise InvalidInputError(f"no user of the held-out day {start:%Y-%m-%d} has history before it")
    chosen = sorted(relevant)
    if len(chosen) > users:
        chosen = sorted(np.random.default_rng(seed).choice(chosen, size=users, replace=False).tolist())
    history = before[before["user_id"].isin(set(chosen))].sort_values("event_time", kind="stable")
    return Holdout(request_times(history), history, {u: relevant[u] for u in chosen})


def measure(settings: Settings, folder: Path, held: Holdout, ranker: Any | None, k: int) -> dict[str, float]:
    """The version's metrics (see the module) on the held-out users; `ranker` None: candidate order."""
    source = ArtifactCandidates(settings, held.history, folder)
    users = sorted(held.relevant)
    depth = max(k, settings.serving.rank_depth)
    lists = candidate_lists(source, users, held.at, held.relevant, depth)
    candidates = lists.groupby("user_id", sort=False)["item_id"].agg(list).to_dict()
    metrics = {f"ann_recall@{k}": recall_at_k(_ann_lists(source, users, k, settings.serving.nprobe), held.relevant,
                                              k),
               f"candidate_recall@{k}": recall_at_k(candidates, held.relevant, k),
               f"candidate_ndcg@{FINAL_K}": ndcg_at_k(candidates, held.relevant, FINAL_K)}
    final = candidates
    if ranker is not None and len(lists):
        head = lists[lists.groupby("list_id").cumcount() < settings.serving.rank_depth]
        rows = with_features(open_feature_store(settings), head, service_of(ranker))
        scores = ranker.score_lists(rows, rows["candidate_score"].to_numpy(), rows["embedding_score"].to_numpy(),
                                    rows["list_id"].to_numpy())
        ranked = (rows.assign(_score=scores).sort_values(["list_id", "_score"], ascending=[True, False], kind="stable")
                  .groupby("user_id", sort=False)["item_id"].agg(list).to_dict())
        final = {u: ranked.get(u, []) + candidates.get(u, [])[settings.serving.rank_depth:] for u in users}
    metrics[f"ndcg@{FINAL_K}"] = ndcg_at_k(final, held.relevant, FINAL_K)
    metrics[f"recall@{FINAL_K}"] = recall_at_k(final, held.relevant, FINAL_K)
    metrics["users"] = float(len(users))
    return metrics


def popularity(before: pd.DataFrame, held: Holdout, k: int) -> dict[str, float]:
    """The most taken items before the day, each user's own left out: the floor a model must beat."""
    ranked = [str(i) for i in before["item_id"].value_counts().index[: k + 500]]
    seen = held.history.groupby("user_id")["item_id"].agg(set).to_dict()
    lists = {u: [i for i in ranked if i not in seen.get(u, set())][:k] for u in held.relevant}
    return {f"ndcg@{FINAL_K}": ndcg_at_k(lists, held.relevant, FINAL_K),
            f"recall@{FINAL_K}": recall_at_k(lists, held.relevant, FINAL_K),
            f"candidate_recall@{k}": recall_at_k(lists, held.relevant, k)}


def _ann_lists(source: ArtifactCandidates, users: Sequence[str], k: int, nprobe: int) -> dict[str, list[str]]:
    index = source.retriever.tables.index
    out: dict[str, list[str]] = {}
    for user in users:
        history = source.history.get(user, [])
        vector = source.retriever.fold_in(history)
        if vector is None:
            out[user] = []
            continue
        seen = set(history)
        found = index.search(np.asarray(vector, dtype=np.float32)[None, :], k + len(seen), nprobe)[0]
        out[user] = [item for item, _ in found if item not in seen][:k]
    return out

