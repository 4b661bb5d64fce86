"""Peak memory and time of a point-in-time training set (`training.training_set.build_training_set`) on a world
built by `bench.daily_scale`, joined at once and in chunks, side by side.

    .venv/bin/python -m bench.training_set_memory --world var/bench/daily-10000000 [--rows 1000000]
                                                  [--chunks 250000,100000000]

The rows are what the daily pipeline's ranker step joins: lists of 100 candidates per user (users and items drawn
at random from the world's lake, each list at a moment in the last 30 days before the lake's end). Each
configuration runs in a process of its own, so its peak RSS (`ru_maxrss`) is its own; results in
bench/results/training_set_memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, git_commit, machine, record

OUT = RESULTS / "training_set_memory.json"
LIST_LENGTH = 100


def measure(world: Path, rows: int, chunk_rows: int, seed: int = 0) -> dict[str, Any]:
    """In this process: build the set over the `bench.daily_scale` folder `world`; seconds and peak RSS (MiB)."""
    import numpy as np
    import pandas as pd

    from recsys.features.store import open_feature_store
    from recsys.stores.lake import Lake
    from tests.conftest import make_settings
    from training.training_set import build_training_set

    settings = make_settings("local", world)
    settings = settings.model_copy(update={"features": settings.features.model_copy(
        update={"repo_path": world / "feature_repo", "project": "daily_scale"})})
    store = open_feature_store(settings)
    table = Lake(settings.lake_path).interactions(columns=["user_id", "item_id", "event_time"])
    users = np.array(table.column("user_id").unique().to_pylist())
    items = np.array(table.column("item_id").unique().to_pylist())
    end = pd.Timestamp(table.column("event_time").to_pandas().max()).tz_convert("UTC").floor("D")
    del table
    rng = np.random.default_rng(seed)
    lists = rows // LIST_LENGTH
    labelled = pd.DataFrame({
        "user_id": users[rng.integers(0, len(users), lists)].repeat(LIST_LENGTH),
        "item_id": items[rng.integers(0, len(items), lists * LIST_LENGTH)],
        "event_timestamp": (end - pd.to_timedelta(rng.integers(0, 30 * 86_400, lists), unit="s")).repeat(LIST_LENGTH),
        "label": 0,
    })
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    built = build_training_set(store, labelled, chunk_rows=chunk_rows)
    return {"rows": len(built.frame), "chunk_rows": chunk_rows, "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mib_before": round(before), "peak_rss_mib_after":
            round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_increase_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="a bench.daily_scale folder")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunks", default="250000,100000000", help="chunk sizes to compare (one process each)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: this chunk size only
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.world.resolve(), args.rows, args.one)), flush=True)
        return
    runs = []
    for chunk in [int(c) for c in args.chunks.split(",") if c]:
        done = subprocess.run([sys.executable, "-m", "bench.training_set_memory", "--world", str(args.world),
                               "--rows", str(args.rows), "--one", str(chunk)], capture_output=True, text=True,
                              check=True, timeout=3600)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    record("training_set_memory", {"machine": machine(), "git": git_commit(), "world": str(args.world),
                                   "runs": runs}, OUT)


if __name__ == "__main__":
    main()
