"""Ranked lists measured by Evidently's recsys metrics: the one place the reports build and read them.

A *lists frame* has one row per (list, item): `list_id` (one served answer, or one user's offline list),
`user_id`, `item_id`, `rank` (1-based, the order the list was shown in), `score`, and `target`, the item's
relevance (0: not relevant). Evidently's metrics (`evidently.metrics.recsys`, the members of its
`RecsysPreset`) group rows by `list_id`, so every list counts once even when a user got several; ranks come
from `rank` (the served order, which post-processing may have made differ from the score order), while the
score distribution reads `score`.

The *training frame* (`list_id` = user, `item_id`) is what popularity bias, novelty and serendipity compare
the lists with; items carry their catalog category, one-hot, for intra-list diversity and serendipity (cosine
distance between categories: 0 for two items of one category, 1 otherwise) and for the item bias chart.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.datasets import Recsys
from evidently.core.metric_types import DataframeValue, Metric, SingleValue
from evidently.core.report import ReferenceMetricNotFound, Snapshot
from evidently.metrics.recsys import (
    MAP,
    MRR,
    NDCG,
    Diversity,
    FBetaTopK,
    HitRate,
    ItemBias,
    Novelty,
    Personalization,
    PopularityBiasMetric,
    PrecisionTopK,
    RecallTopK,
    RecCasesTable,
    ScoreDistribution,
    Serendipity,
)

LIST_COLUMNS = ("list_id", "user_id", "item_id", "rank", "score", "target")
CATEGORY = "category"
SCORES = "scores"  # the ranking task read by score (ScoreDistribution); the default one reads `rank`
#: The headline number of each metric, by its Evidently class (top-k metrics are read at k).
NAMES = {"NDCG": "ndcg", "MRR": "mrr", "HitRate": "hit_rate", "MAP": "map", "RecallTopK": "recall",
         "PrecisionTopK": "precision", "FBetaTopK": "f1", "Personalization": "personalization",
         "PopularityBiasMetric": "popularity_bias", "Novelty": "novelty", "Diversity": "diversity",
         "Serendipity": "serendipity", "ScoreDistribution": "score_entropy"}
RANKING = (NDCG, MRR, HitRate, MAP, RecallTopK, PrecisionTopK, FBetaTopK)
AT_K = {"ndcg", "mrr", "hit_rate", "map", "recall", "precision", "f1", "personalization"}
UNKNOWN_CATEGORY = "(none)"
#: Before each item id in Evidently's frames: its pairwise-distance table would read an id like "5246" as the
#: number 5246 and then miss it (Evidently 0.7.23), losing diversity and serendipity for numeric ids.
ID_PREFIX = "#"


def metrics_for(k: int, categories: Sequence[str], with_train: bool) -> list[Metric]:
    """RecsysPreset's metrics, chosen as it would be for this data, with the list order read from `rank`."""
    metrics: list[Metric] = [NDCG(k=k), MRR(k=k), HitRate(k=k), MAP(k=k), RecallTopK(k=k), PrecisionTopK(k=k),
                             FBetaTopK(k=k), Personalization(k=k), ScoreDistribution(k=k, ranking_name=SCORES),
                             RecCasesTable(display_features=[CATEGORY])]
    if len(categories) > 1:
        metrics.append(Diversity(k=k, item_features=list(categories)))
    if with_train:
        metrics += [PopularityBiasMetric(k=k), Novelty(k=k), ItemBias(k=k, column_name=CATEGORY, distribution="train")]
        if len(categories) > 1:
            metrics.append(Serendipity(k=k, item_features=list(categories)))
    return metrics


@dataclass
class Measured:
    snapshot: Snapshot
    metrics: list[Metric]  # those the report holds
    left_out: dict[str, str] = field(default_factory=dict)  # metric: why Evidently could not compute it


def run(current: pd.DataFrame, reference: pd.DataFrame | None, train: pd.DataFrame | None,
        items: pd.DataFrame | None, k: int, name: str) -> Measured:
    """The Evidently report of `current` (side by side with `reference` when given).

    Lists without any relevant item are left out of NDCG, MRR, MAP, precision and recall (Evidently's
    `no_feedback_users=False`): those say how well the lists that got feedback ordered it. A secondary metric
    Evidently fails on for this data (its charts cannot bin a distribution of identical values, say) is left
    out and named; a failing ranking metric fails the report."""
    category = _categories(items, [f for f in (current, reference, train) if f is not None])
    codes = sorted(set(category.values()) | {UNKNOWN_CATEGORY})
    one_hot = [f"category_{n}" for n in range(len(codes))] if len(codes) > 2 else []
    definition = DataDefinition(
        numerical_columns=["rank", "score", "target", *one_hot], categorical_columns=[CATEGORY],
        ranking=[Recsys(user_id="list_id", item_id="item_id", target="target", prediction="rank",
                        recommendations_type="rank"),
                 Recsys(name=SCORES, user_id="list_id", item_id="item_id", target="target", prediction="score",
                        recommendations_type="score")])

    def dataset(frame: pd.DataFrame) -> Dataset:
        return Dataset.from_pandas(_prepared(frame, category, codes, one_hot), data_definition=definition)

    data = (dataset(current), dataset(reference) if reference is not None else None)
    extra = {"current_train_data": dataset(train)} if train is not None and not train.empty else None
    metrics = metrics_for(k, one_hot, extra is not None)

    def report(chosen: list[Metric]) -> Snapshot:
        with warnings.catch_warnings():  # Evidently's legacy code divides by zero for lists shorter than k
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return Report(chosen, metadata={"name": name}).run(data[0], data[1], additional_data=extra, name=name)

    try:
        return Measured(report(metrics), metrics)
    except Exception as error:  # noqa: BLE001 - find the metric Evidently fails on, report the rest
        left_out = {}
        for metric in metrics:
            try:
                report([metric])
            except Exception as alone:  # noqa: BLE001 - this one cannot be computed for this data
                if isinstance(metric, RANKING):
                    raise error from alone
                left_out[type(metric).__name__] = f"{type(alone).__name__}: {alone}"
        kept = [m for m in metrics if type(m).__name__ not in left_out]
        return Measured(report(kept), kept, left_out)


def headline(measured: Measured, k: int) -> dict[str, dict[str, float | None]]:
    """{`ndcg@k`, `mrr@k`, ..., `novelty`, ...: {"current": value, "reference": value or None}} as Evidently
    computed them (top-k curves read at k, or at their last rank when the lists are shorter)."""
    out: dict[str, dict[str, float | None]] = {}
    context = measured.snapshot.context
    for metric in measured.metrics:
        short = NAMES.get(type(metric).__name__)
        if short is None:
            continue
        label = f"{short}@{k}" if short in AT_K else short
        current = _number(context.get_metric_result(metric), k)
        try:
            reference: float | None = _number(context.get_reference_metric_result(metric.metric_id), k)
        except ReferenceMetricNotFound:  # a BaseException in Evidently 0.7
            reference = None
        out[label] = {"current": current, "reference": reference}
    return out


def _number(result: Any, k: int) -> float | None:
    if isinstance(result, SingleValue):
        value = float(result.value)
    elif isinstance(result, DataframeValue) and len(result.value):
        value = float(result.value["value"].iloc[min(k, len(result.value)) - 1])
    else:
        return None
    return value if np.isfinite(value) else None


def _categories(items: pd.DataFrame | None, frames: Sequence[pd.DataFrame]) -> dict[str, str]:
    listed = set().union(*(set(f["item_id"].astype(str)) for f in frames))
    if items is None or items.empty or CATEGORY not in items:
        return dict.fromkeys(listed, UNKNOWN_CATEGORY)
    known = dict(zip(items["item_id"].astype(str), items[CATEGORY].fillna("").astype(str)))
    return {i: known.get(i) or UNKNOWN_CATEGORY for i in listed}


def _prepared(frame: pd.DataFrame, category: dict[str, str], codes: list[str], one_hot: list[str]) -> pd.DataFrame:
    out = pd.DataFrame({
        "list_id": frame["list_id"].astype(str), "item_id": frame["item_id"].astype(str),
        "rank": frame["rank"].astype("int64") if "rank" in frame else 1,
        "score": frame["score"].astype("float64") if "score" in frame else 0.0,
        "target": frame["target"].astype("float64") if "target" in frame else 1.0,
    })
    out[CATEGORY] = out["item_id"].map(category).fillna(UNKNOWN_CATEGORY)
    out["item_id"] = ID_PREFIX + out["item_id"]
    if one_hot:
        position = out[CATEGORY].map({c: n for n, c in enumerate(codes)}).to_numpy()
        matrix = np.zeros((len(out), len(one_hot)))
        matrix[np.arange(len(out)), position] = 1.0
        out[one_hot] = matrix
    return out.reset_index(drop=True)
