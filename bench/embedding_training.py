"""Two-tower training throughput on 2 cores: examples per second, and time per epoch, on
ml-latest-small and on 10 million synthetic interactions (the lake `bench/feature_job.py` builds)."""

from __future__ import annotations

import sys
import time

from bench.common import CACHE, record
from bench.feature_job import build_lake
from embeddings.train import TrainConfig, train
from ingestion.synthetic import SyntheticConfig
from recsys.settings import Settings
from recsys.stores import Lake


def timed(lake: Lake, epochs: int) -> dict[str, float]:
    started = time.perf_counter()
    trained = train(lake, TrainConfig(epochs=epochs))
    seconds = time.perf_counter() - started
    return {"epochs": epochs, "wall_s": round(seconds, 1), "examples_per_s": round(trained.examples_per_second),
            "final_epoch_loss": round(sum(trained.losses[-20:]) / min(20, len(trained.losses)), 3)}


def main() -> None:
    interactions = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    movielens = Lake(Settings.load().lake_path)
    synthetic = build_lake(SyntheticConfig(users=200_000, items=50_000, interactions=interactions, days=90))
    record("embedding_training", {
        "threads": 2, "batch_size": TrainConfig().batch_size, "dim": TrainConfig().dim,
        "ml_latest_small": timed(movielens, epochs=12),
        f"synthetic_{interactions}": timed(synthetic, epochs=1),
        "lake": str(CACHE),
    })


if __name__ == "__main__":
    main()
