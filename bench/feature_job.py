"""The Spark feature job on 10 million synthetic interactions: wall time and peak memory.

The lake is written straight from the synthetic files (no catalog or interaction store needed);
peak memory is the largest resident set of this process plus its children (the Spark JVM and its
Python workers), sampled twice a second.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time

import psutil

from bench.common import CACHE, record, synthetic
from ingestion.features.engineering import FeatureJobConfig, run_feature_job
from ingestion.generic import GenericSource, load_into_lake
from ingestion.synthetic import SyntheticConfig
from recsys.stores import Lake


class PeakMemory(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = 0, True

    def run(self) -> None:
        me = psutil.Process()
        while self.running:
            processes = [me, *me.children(recursive=True)]
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.5)


def build_lake(config: SyntheticConfig) -> Lake:
    lake = Lake(CACHE / f"lake-{config.interactions}")
    if (lake.root / ".complete").exists():
        return lake
    shutil.rmtree(lake.root, ignore_errors=True)
    load_into_lake(GenericSource(synthetic(config), chunk_rows=2_500_000), lake)
    (lake.root / ".complete").touch()
    return lake


def main() -> None:
    interactions = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    config = SyntheticConfig(users=200_000, items=50_000, interactions=interactions, days=90)
    lake = build_lake(config)
    output = CACHE / "features-bench"
    shutil.rmtree(output, ignore_errors=True)
    monitor = PeakMemory()
    monitor.start()
    started = time.perf_counter()
    written = run_feature_job(FeatureJobConfig(lake=lake.root, output=output))
    seconds = time.perf_counter() - started
    monitor.running = False
    monitor.join()
    record("feature_job", {
        "interactions": interactions, "users": config.users, "items": config.items, "days": config.days,
        "spark_master": "local[2]", "wall_s": round(seconds, 1),
        "peak_rss_mib_process_and_children": round(monitor.peak / 2**20), "rows_written": written,
    })


if __name__ == "__main__":
    main()
