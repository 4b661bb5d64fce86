"""Positives, the temporal split, metrics with hand-computed values, and the whole report on a tiny lake."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.errors import InvalidInputError
from recsys.events import INTERACTION_COLUMNS
from recsys.stores import Lake
from training.evaluation import (
    beats,
    catalog_coverage,
    evaluate,
    ndcg_at_k,
    positives,
    recall_at_k,
    run_evaluation,
    summarize,
    temporal_split,
)
from training.peers import EASE, Popularity, default_peers

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def events(rows: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    """(user, item, minute, action[, value]) rows as canonical interactions."""
    frame = pd.DataFrame({
        "event_id": [f"e{n}" for n in range(len(rows))],
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
        "event_time": [T0 + pd.Timedelta(minutes=r[2]) for r in rows],
        "action_type": [r[3] for r in rows], "value": [r[4] if len(r) > 4 else None for r in rows],
        "session_id": None, "context": None,
    })
    return frame[list(INTERACTION_COLUMNS)]


def history(user: str, items: list[str], start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"user_id": user, "item_id": items,
                         "event_time": [T0 + pd.Timedelta(minutes=start + n) for n in range(len(items))]})


# -- positives ---------------------------------------------------------------------------------
def test_positives_drop_skips_and_keep_the_first_event_per_pair() -> None:
    frame = positives(events([("u", "a", 5, "view"), ("u", "a", 1, "click"), ("u", "b", 2, "skip"),
                              ("u", "c", 3, "rate", 1.0), ("v", "a", 4, "purchase")]))
    assert list(frame.columns) == ["user_id", "item_id", "event_time"]
    assert frame[["user_id", "item_id"]].values.tolist() == [["u", "a"], ["u", "c"], ["v", "a"]]
    assert frame["event_time"].iloc[0] == T0 + pd.Timedelta(minutes=1)


def test_positives_can_drop_low_ratings() -> None:
    table = events([("u", "a", 1, "rate", 2.0), ("u", "b", 2, "rate", 4.5), ("u", "c", 3, "view")])
    assert positives(table, min_rating=3.5)["item_id"].tolist() == ["b", "c"]


# -- split -------------------------------------------------------------------------------------
def test_split_takes_each_users_latest_fifth_in_time_order() -> None:
    frame = history("u", [f"i{n}" for n in range(10)]).sample(frac=1, random_state=3)  # shuffled rows
    train, test = temporal_split(frame)
    assert test["item_id"].tolist() == ["i8", "i9"]
    assert train["item_id"].tolist() == [f"i{n}" for n in range(8)]
    assert train["event_time"].max() < test["event_time"].min()


def test_split_gives_at_least_one_test_item_and_leaves_single_interaction_users_in_train() -> None:
    frame = pd.concat([history("two", ["a", "b"]), history("one", ["c"]), history("four", list("defg"))])
    train, test = temporal_split(frame)
    assert test.groupby("user_id")["item_id"].apply(list).to_dict() == {"four": ["g"], "two": ["b"]}
    assert train.loc[train["user_id"] == "one", "item_id"].tolist() == ["c"]
    assert len(train) + len(test) == len(frame)


def test_split_respects_min_train_and_fraction() -> None:
    frame = pd.concat([history("u", [f"i{n}" for n in range(10)]), history("v", ["a", "b", "c"])])
    train, test = temporal_split(frame, test_fraction=0.5, min_train=3)
    assert test.groupby("user_id").size().to_dict() == {"u": 5}
    with pytest.raises(InvalidInputError, match="test_fraction"):
        temporal_split(frame, test_fraction=1.0)


def test_split_drops_test_items_already_in_train_and_keeps_cold_items() -> None:
    # Raw events: u re-watches "a" at the end; "new" appears nowhere in train.
    frame = pd.concat([history("u", ["a", "b", "c", "d", "e", "f", "g", "h"]), history("u", ["a", "new"], 100)])
    train, test = temporal_split(frame)
    assert test["item_id"].tolist() == ["new"]
    assert "new" not in set(train["item_id"])


# -- metrics -----------------------------------------------------------------------------------
RECOMMENDED = {"u1": ["a", "b", "c", "d"], "u2": ["x", "y", "z"], "u3": ["p"]}
RELEVANT = {"u1": {"a", "b", "e"}, "u2": {"z"}}


def test_recall_standard_and_capped() -> None:
    # u1: a, b in the top 2 of 3 relevant; u2: z is third.
    assert recall_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx((2 / 3 + 0) / 2)
    assert recall_at_k(RECOMMENDED, RELEVANT, 2, capped=True) == pytest.approx((2 / 2 + 0) / 2)
    assert recall_at_k(RECOMMENDED, RELEVANT, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert recall_at_k({}, RELEVANT, 5) == 0.0  # users without recommendations count as misses


def test_ndcg_with_binary_relevance() -> None:
    u1 = (1 + 1 / math.log2(3)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    u2 = (1 / math.log2(4)) / 1
    assert ndcg_at_k(RECOMMENDED, RELEVANT, 3) == pytest.approx((u1 + u2) / 2)
    assert ndcg_at_k(RECOMMENDED, {"u1": {"a"}}, 10) == pytest.approx(1.0)


def test_catalog_coverage() -> None:
    assert catalog_coverage(RECOMMENDED, 2, train_items=10) == pytest.approx(5 / 10)  # a b x y p


# -- harness -----------------------------------------------------------------------------------
def tiny_positives() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = [history(f"u{u}", [f"i{i}" for i in rng.choice(30, size=8, replace=False)], start=u)
              for u in range(20)]
    return pd.concat(frames, ignore_index=True)


def test_evaluate_reports_every_metric_per_recommender_and_skips_a_refusal() -> None:
    train, test = temporal_split(tiny_positives())
    logged: list[str] = []
    results = evaluate([Popularity(), EASE(max_items=3)], train, test, candidate_ks=(5, 10), final_k=(2, 3),
                       users_sample=7, log=logged.append)
    assert results["recommender"].tolist() == ["popularity", "ease"]
    pop = results.iloc[0]
    assert pop["users"] == 7
    for column in ["recall@2", "recall@3", "recall@5", "recall@10", "capped_recall@10", "ndcg@2", "ndcg@3",
                   "coverage@3", "fit_s", "recommend_s"]:
        assert 0 <= pop[column] < math.inf, column
    assert pop["recall@10"] >= pop["recall@5"] >= pop["recall@3"]
    assert pd.isna(results.iloc[1]["recall@5"]) and "max_items" in results.iloc[1]["note"]
    assert any("skipped" in line for line in logged)


def test_run_evaluation_writes_table_json_and_plot(tmp_path: Path) -> None:
    frame = tiny_positives()
    lake = Lake(tmp_path / "lake")
    lake.write_interactions(events([(u, i, int((t - T0).total_seconds() // 60), "view")
                                    for u, i, t in frame.itertuples(index=False)]
                                   + [("u0", "i99", 500, "skip")]))
    results = run_evaluation(tmp_path / "lake", tmp_path / "out", default_peers, seeds=[1, 2, 3])
    assert results["recommender"].tolist() == ["popularity", "itemknn", "ease", "als"]
    # Deterministic peers run once; ALS once per seed, its spread reported beside its mean.
    assert results.set_index("recommender")["seeds"].to_dict() == {"popularity": 1, "itemknn": 1, "ease": 1,
                                                                   "als": 3}
    assert (results.loc[results["recommender"] != "als", "recall@20_std"] == 0).all()
    runs = pd.read_csv(tmp_path / "out" / "evaluation_runs.csv")
    als = runs[runs["recommender"] == "als"]
    assert sorted(als["seed"]) == [1, 2, 3]
    assert results.set_index("recommender").loc["als", "recall@20"] == pytest.approx(als["recall@20"].mean())
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert [r["recommender"] for r in saved["results"]] == results["recommender"].tolist()
    assert saved["seeds"] == [1, 2, 3] and saved["universe"] == "items in the training part"
    assert pd.read_csv(tmp_path / "out" / "evaluation.csv").shape[0] == 4
    assert (tmp_path / "out" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    assert saved["split"]["validation"] is False


def test_a_win_must_exceed_twice_the_spread() -> None:
    table = summarize(pd.DataFrame({
        "recommender": ["ours", "ours", "ours", "peer"], "seed": [0, 1, 2, 0],
        "ndcg@10": [0.30, 0.32, 0.34, 0.29],
    }))
    std = float(np.std([0.30, 0.32, 0.34]))
    assert table.set_index("recommender").loc["ours", "ndcg@10_std"] == pytest.approx(std)
    assert not beats(table, "ours", "peer", "ndcg@10")  # 0.03 ahead, but 2 × 0.0163 = 0.033
    wider = table.assign(**{"ndcg@10": [0.40, 0.29]})
    assert beats(wider, "ours", "peer", "ndcg@10") and not beats(wider, "peer", "ours", "ndcg@10")


def test_validation_runs_never_see_the_test_part(tmp_path: Path) -> None:
    frame = tiny_positives()
    lake = Lake(tmp_path / "lake")
    lake.write_interactions(events([(u, i, int((t - T0).total_seconds() // 60), "view")
                                    for u, i, t in frame.itertuples(index=False)]))
    run_evaluation(tmp_path / "lake", tmp_path / "test", default_peers)
    run_evaluation(tmp_path / "lake", tmp_path / "val", default_peers, validation=True)
    test = json.loads((tmp_path / "test" / "evaluation.json").read_text())
    val = json.loads((tmp_path / "val" / "evaluation.json").read_text())
    assert val["split"]["validation"]
    assert val["train_rows"] + val["test_rows"] <= test["train_rows"]  # carved from the training part alone


def test_run_evaluation_on_an_empty_lake_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no interactions"):
        run_evaluation(tmp_path / "lake", tmp_path / "out", default_peers)
