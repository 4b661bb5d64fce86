"""Synthetic generator throughput and peak memory at 10 million interactions.

The generator runs in a child process so its peak resident memory is its own.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time

from bench.common import CACHE, record

CHILD = """
import sys
from pathlib import Path
from ingestion.synthetic import SyntheticConfig, generate
n = int(sys.argv[1])
generate(SyntheticConfig(users=200_000, items=50_000, interactions=n, days=90), Path(sys.argv[2]), show_progress=False)
"""


def main() -> None:
    interactions = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    out = CACHE / "generator-run"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, str(interactions), str(out)], check=True)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    size_mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    shutil.rmtree(out, ignore_errors=True)
    record("generator_throughput", {
        "interactions": interactions, "users": 200_000, "items": 50_000, "days": 90,
        "wall_s": round(seconds, 1), "interactions_per_s": round(interactions / seconds),
        "peak_rss_mib": round(peak_mib), "output_mib": round(size_mib),
    })


if __name__ == "__main__":
    main()
