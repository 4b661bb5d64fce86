"""Ranker examples and metrics on hand-made lists whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.ranker_data import candidate_lists, request_times
from training.ranker_eval import list_metrics


class FixedSource:
    """Each user gets items c0..c{depth-1}, candidate scores descending, embedding scores ascending."""

    def scored(self, user: str, depth: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        return [f"c{i}" for i in range(depth)], np.linspace(1, 0, depth), np.linspace(0, 1, depth)


def test_candidate_lists_label_what_the_user_took_next() -> None:
    at = {"u1": pd.Timestamp("2024-01-02", tz="UTC"), "u2": pd.Timestamp("2024-01-03", tz="UTC")}
    lists = candidate_lists(FixedSource(), ["u1", "u2"], at, {"u1": {"c2", "zz"}}, depth=4)
    assert lists["list_id"].tolist() == [0] * 4 + [1] * 4
    assert lists["label"].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert (lists.loc[lists["user_id"] == "u2", "event_timestamp"] == at["u2"]).all()


def test_request_time_is_just_after_the_last_event() -> None:
    history = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"],
                            "event_time": pd.to_datetime(["2024-01-01", "2024-01-05"], utc=True)})
    assert request_times(history) == {"u": pd.Timestamp("2024-01-05 00:00:01", tz="UTC")}


def test_list_metrics_compare_ranker_order_with_candidate_order() -> None:
    at = {"u1": pd.Timestamp(0, tz="UTC"), "u2": pd.Timestamp(0, tz="UTC")}
    lists = candidate_lists(FixedSource(), ["u1", "u2"], at, {"u1": {"c3"}, "u2": {"c3", "missed"}}, depth=4)
    perfect = lists["label"].to_numpy() * 10.0 + lists["embedding_score"].to_numpy()
    metrics = list_metrics(lists, perfect, {"u1": {"c3"}, "u2": {"c3", "missed"}})
    assert metrics["auc"] == pytest.approx(1.0)
    ideal_two = 1 + 1 / np.log2(3)
    assert metrics["ndcg@10"] == pytest.approx((1.0 + 1 / ideal_two) / 2)  # the missed item costs u2
    assert metrics["candidate_ndcg@10"] == pytest.approx((1 / np.log2(5) + 1 / np.log2(5) / ideal_two) / 2)

