"""Two-tower training throughput on 2 cores: examples per second, and time to train, on
ml-latest-small and on 10 million synthetic interactions (the lake `bench/feature_job.py` builds).

Usage: `python -m bench.embedding_training [interactions] [steps] [synthetic]` (`synthetic`: rerun only
the synthetic part, keeping the other figures of the last results file). The synthetic epoch is measured
over its first `steps` batches (default 300) and extrapolated to the whole epoch: a full pass takes
longer than this machine can spare, and the rate is steady once the first batches are out. A short
run with 1 and with 2 torch threads shows which uses the two cores better on this (shared) machine.
Figures go to `bench/results/embedding_training.json`, the ml-latest-small loss curve beside it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from bench.common import CACHE, RESULTS, record
from bench.feature_job import build_lake
from embeddings.train import TrainConfig, plot_losses, train
from ingestion.synthetic import SyntheticConfig
from recsys.settings import Settings
from recsys.stores import Lake

QUIET = print  # progress lines show the run is alive


def timed(lake: Lake, config: TrainConfig) -> dict[str, Any]:
    """Train; wall time (with setup: reading the catalog, vocabulary), and the training loop's rate."""
    started = time.perf_counter()
    trained = train(lake, config, progress=QUIET)
    wall = time.perf_counter() - started
    steps, rate = len(trained.losses), trained.examples_per_second
    return {"epochs": config.epochs, "threads": config.threads, "steps": steps, "wall_s": round(wall, 1),
            "examples_per_s": round(rate), "setup_s": round(max(0.0, wall - steps * config.batch_size / rate), 1),
            "final_loss": round(float(np.mean(trained.losses[-20:])), 3), "losses": trained.losses}


def extrapolated(lake: Lake, run: dict[str, Any]) -> dict[str, Any]:
    """The epoch time the measured rate implies for every event of the lake."""
    events = lake.interactions(columns=["item_id"]).num_rows
    epoch = run["setup_s"] + events / run["examples_per_s"]
    return {"events": events, "extrapolated_epoch_s": round(epoch), "extrapolated_epoch_min": round(epoch / 60, 1)}


def movielens_figures() -> dict[str, Any]:
    movielens = Lake(Settings.load().lake_path)
    small = TrainConfig(epochs=12)
    figures: dict[str, Any] = {"batch_size": small.batch_size, "dim": small.dim, "history": small.history}
    threads = {n: timed(movielens, replace(small, epochs=1, threads=n, max_steps=60)) for n in (1, 2)}
    figures["threads_ml_latest_small_60_steps"] = {
        n: {k: run[k] for k in ("examples_per_s", "wall_s")} for n, run in threads.items()}
    full = timed(movielens, small)
    plot_losses(full.pop("losses"), RESULTS / "embedding_training.png")
    figures["ml_latest_small"] = full
    return figures


def synthetic_figures(interactions: int, steps: int, sparse: bool) -> dict[str, Any]:
    lake = build_lake(SyntheticConfig(users=200_000, items=50_000, interactions=interactions, days=90))
    bounded = timed(lake, TrainConfig(epochs=1, max_steps=steps, sparse_ids=sparse))
    bounded.pop("losses")
    return {**bounded, **extrapolated(lake, bounded), "sparse_id_gradients": sparse,
            "note": f"first {steps} batches measured; the epoch is extrapolated"}


def main() -> None:
    interactions = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    only_synthetic = len(sys.argv) > 3 and sys.argv[3] == "synthetic"
    last = RESULTS / "embedding_training.json"
    if only_synthetic and last.is_file():
        kept = json.loads(last.read_text())
        figures = {k: v for k, v in kept.items() if k not in ("benchmark", "measured_at", "machine")}
    else:
        figures = movielens_figures()
    figures[f"synthetic_{interactions}"] = synthetic_figures(interactions, steps, sparse=True)
    if not only_synthetic:
        figures[f"synthetic_{interactions}_dense_ids"] = synthetic_figures(interactions, steps, sparse=False)
    figures["lake"] = str(CACHE)
    record("embedding_training", figures)


if __name__ == "__main__":
    main()
