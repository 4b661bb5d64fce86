"""Warm start against training from scratch: time and recall@K of the two-tower model on a time split.

Model A is trained from scratch on the events before `cut_a`; model B on the events before `cut_b`, once from
scratch (`epochs`, as the pipeline did) and warm-started from A (`warm_epochs` at `warm_learning_rate` on the
events after A's data plus a `replay_share` sample of the earlier ones, as the pipeline does now), once per
replay share in `SHARES`. The B models are measured on the events in [cut_b, end), as next-item predictions:
for each such event (an item new to its user, with at least one earlier event of the user, before or in the
window), the user vector from the user's previous `history` items, the K nearest items by cosine with the user's
earlier items left out; recall@K is the share of events whose item is among them.

Usage: `python -m bench.warm_start [movielens|synthetic|both]` (default both); `python -m bench.warm_start scale N`
times one warm update on a lake of N interactions shaped like the 10M world (see `scale`). ml-latest-small is split
at event quantiles (A before the 90th percentile of event times, B before the 95th, measured on the last 5%: its days
hold a dozen events each); the synthetic world by days (A before day D-1, B before day D, measured from day D on,
D the third-last day, the last being partial). Figures go to `bench/results/warm_start.json` (running one
dataset keeps the other's figures).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import RESULTS, record, synthetic
from bench.feature_job import build_lake
from embeddings.train import TrainConfig, Trained, item_vectors, save, train, train_frame, user_vectors
from ingestion.generic import GenericSource
from ingestion.movielens import MovieLensSource
from ingestion.synthetic import SyntheticConfig
from recsys.settings import ROOT_DIR

MOVIELENS = ROOT_DIR.parent / "shared" / "data" / "ml-latest-small"
WORLD = SyntheticConfig(users=2_000, items=2_000, interactions=150_000, days=30, categories=30, seed=5,
                        taste_concentration=0.1, explore_rate=0.05)
K = (20, 100)
SHARES = (0.0, 0.05, 0.2)  # replay shares of the warm runs


def recall(trained: Trained, items: pd.DataFrame, frame: pd.DataFrame, cut: pd.Timestamp,
           ks: tuple[int, ...] = K) -> dict[str, float]:
    """Next-item recall@k over the events from `cut` (see the module docstring)."""
    frame = frame.sort_values("event_time", kind="stable")
    catalog = items["item_id"].to_numpy()
    position = {item: i for i, item in enumerate(catalog)}
    window_users = set(frame.loc[frame["event_time"] >= cut, "user_id"])
    users, histories, targets, seen = [], [], [], []
    for user, group in frame[frame["user_id"].isin(window_users)].groupby("user_id", sort=False):
        sequence = [position.get(i, -1) for i in group["item_id"]]
        first = max(int((group["event_time"] < cut).sum()), 1)
        earlier = set(sequence[:first])
        for at in range(first, len(sequence)):
            if sequence[at] >= 0 and sequence[at] not in earlier:
                users.append(user)
                histories.append([catalog[i] for i in sequence[:at][-trained.model.config.history:] if i >= 0])
                targets.append(sequence[at])
                seen.append(np.array(sorted(earlier - {-1}), dtype=np.int64))
            earlier.add(sequence[at])
    vectors = item_vectors(trained, items)
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), 2048):
        part = slice(start, start + 2048)
        scores = user_vectors(trained, users[part], histories[part]) @ vectors.T
        for row, (target, taken) in enumerate(zip(targets[part], seen[part])):
            above = scores[row] > scores[row, target]
            ranks[start + row] = above.sum() - above[taken].sum()
    return {"events": float(len(users)), "users": float(len(set(users))),
            **{f"recall@{k}": float(np.mean(ranks < k)) for k in ks}}


def compare(items: pd.DataFrame, frame: pd.DataFrame, cut_a: pd.Timestamp, cut_b: pd.Timestamp,
            config: TrainConfig, folder: Path, shares: tuple[float, ...] = SHARES) -> dict[str, Any]:
    """Train A, then B from scratch and B warm from A (once per replay share); time and recall from `cut_b`."""
    runs: dict[str, Any] = {}
    plans = [("A_scratch", replace(config, until=cut_a)), ("B_scratch", replace(config, until=cut_b))]
    plans += [(f"B_warm_replay_{share}", replace(config, until=cut_b, warm_start=folder / "A", replay_share=share))
              for share in shares]
    for name, plan in plans:
        started = time.perf_counter()
        trained = train_frame(items, frame, plan, progress=print)
        seconds = time.perf_counter() - started
        if name == "A_scratch":
            save(trained, folder / "A")
        runs[name] = {"train_s": round(seconds, 1), "steps": len(trained.losses), "epochs": trained.start.epochs,
                      "warm_from": trained.start.warm_from, "note": trained.start.note,
                      **{k: round(v, 4) for k, v in recall(trained, items, frame, cut_b).items()}}
        if trained.start.warm_from is not None:
            runs[name] |= {"replay_share": plan.replay_share, "learning_rate": plan.warm_learning_rate,
                           "time_share_of_B_scratch": round(seconds / runs["B_scratch"]["train_s"], 3)}
        print(name, runs[name])
    return {"cut_a": cut_a.isoformat(), "cut_b": cut_b.isoformat(), "end": frame["event_time"].max().isoformat(),
            "events_before_a": int((frame["event_time"] < cut_a).sum()),
            "events_a_to_b": int(((frame["event_time"] >= cut_a) & (frame["event_time"] < cut_b)).sum()),
            "events_from_b": int((frame["event_time"] >= cut_b).sum()), "epochs": config.epochs,
            "warm_epochs": config.warm_epochs, "runs": runs}


def movielens() -> dict[str, Any]:
    source = MovieLensSource(MOVIELENS)
    items = source.items()
    ratings = pd.read_csv(MOVIELENS / "ratings.csv")
    frame = pd.DataFrame({"user_id": ratings["userId"].astype(str), "item_id": ratings["movieId"].astype(str),
                          "event_time": pd.to_datetime(ratings["timestamp"], unit="s", utc=True)})
    cut_a, cut_b = (frame["event_time"].quantile(q) for q in (0.90, 0.95))
    with tempfile.TemporaryDirectory() as folder:
        return {"data": "ml-latest-small (ratings)", **compare(items, frame, cut_a, cut_b, TrainConfig(epochs=12),
                                                                Path(folder))}


def synthetic_world() -> dict[str, Any]:
    source = GenericSource(synthetic(WORLD))
    items = source.items()
    assert items is not None
    frame = pd.concat(chunk.frame for chunk in source.interaction_chunks())
    frame = frame[frame["action_type"] != "skip"][["user_id", "item_id", "event_time"]]
    day = frame["event_time"].max().floor("D") - pd.Timedelta(days=2)  # the last day is partial: measure 2.5 days
    with tempfile.TemporaryDirectory() as folder:
        return {"data": f"synthetic {WORLD}", **compare(items, frame, day - pd.Timedelta(days=1), day,
                                                        TrainConfig(epochs=12), Path(folder))}


def scale(interactions: int) -> dict[str, Any]:
    """A warm update on a lake of the 10M world's shape (200k users, 50k items, 90 days) scaled to `interactions`:
    the time of every part of `train`, whose data path still reads and windows every event (for the histories)
    while training only on the last day's events and the replay sample."""
    lake = build_lake(SyntheticConfig(users=200_000, items=50_000, interactions=interactions, days=90))
    days = sorted((lake.root / "interactions").glob("event_date=*"))
    last = pd.Timestamp(days[-1].name.split("=", 1)[1], tz="UTC")
    config = TrainConfig(epochs=12)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        old = train(lake, replace(config, until=last, max_steps=20), progress=print)  # a stand-in for the old version
        save(old, Path(folder) / "A")
        setup = time.perf_counter() - started
        started = time.perf_counter()
        warm = train(lake, replace(config, warm_start=Path(folder) / "A"), progress=print)
        seconds = time.perf_counter() - started
    return {"interactions": interactions, "users": 200_000, "items": 50_000, "days": 90,
            "old_version_s": round(setup, 1), "warm_update_s": round(seconds, 1), "steps": len(warm.losses),
            "examples_per_s": round(warm.examples_per_second), "epochs": warm.start.epochs,
            "replay_share": config.replay_share, "note": warm.start.note,
            "examples_about": len(warm.losses) * config.batch_size, "rows_copied": warm.start.copied}


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    last = RESULTS / "warm_start.json"
    kept = json.loads(last.read_text()) if which != "both" and last.is_file() else {}
    figures: dict[str, Any] = {k: v for k, v in kept.items() if k in ("ml_latest_small", "synthetic")
                               or k.startswith("scale_")}
    if which in ("movielens", "both"):
        figures["ml_latest_small"] = movielens()
    if which in ("synthetic", "both"):
        figures["synthetic"] = synthetic_world()
    if which == "scale":
        interactions = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
        figures[f"scale_{interactions}"] = scale(interactions)
    record("warm_start", figures, RESULTS / "warm_start.json")


if __name__ == "__main__":
    main()
