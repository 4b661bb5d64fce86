"""What a serving process reads of the interaction history at start-up, on 10 million synthetic interactions.

A serving process needs per-item aggregates of the history: events per item (popularity), each item's first event
(the freshness boost), the newest event and the trending window (the last `TRENDING_DAYS`). Until 2026-12-02 it read
every interaction into pandas and aggregated there, so its start-up time and memory grew with the history;
`Lake.item_activity` aggregates in Arrow, a batch at a time. Each way runs in a fresh process (the lake of
`bench.feature_job`: 200k users, 50k items, 90 days), timed, with its resident memory before, after (what stays)
and at its peak.

    .venv/bin/python -m bench.startup_activity [INTERACTIONS]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import record
from bench.feature_job import build_lake
from ingestion.synthetic import SyntheticConfig


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(root: str, way: str) -> dict[str, float | int | str]:
    """One way's figures in this process (run by `main` in a child of its own)."""
    import pandas as pd

    from recsys.models.candidates import TRENDING_DAYS
    from recsys.stores import Lake

    lake = Lake(Path(root))
    before = _rss_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    started = time.perf_counter()
    if way == "pandas":
        events = lake.interactions(columns=["user_id", "item_id", "event_time"]).to_pandas()
        counts = events["item_id"].value_counts()
        first_seen = events.groupby("item_id")["event_time"].min()
        newest = events["event_time"].max()
        recent = events[events["event_time"] >= newest - pd.Timedelta(days=TRENDING_DAYS)][["item_id", "event_time"]]
        del events
    else:
        activity = lake.item_activity(recent_days=TRENDING_DAYS)
        counts, first_seen, recent = activity.counts, activity.first_seen, activity.recent
    seconds = time.perf_counter() - started
    return {"way": way, "seconds": round(seconds, 2), "rss_before_mib": round(before),
            "rss_after_mib": round(_rss_mib("VmRSS")), "peak_rss_mib": round(_rss_mib("VmHWM")),
            "items": len(counts), "first_seen_items": len(first_seen), "recent_rows": len(recent)}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], sys.argv[3])))
        return
    interactions = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    config = SyntheticConfig(users=200_000, items=50_000, interactions=interactions, days=90)
    lake = build_lake(config)
    runs = []
    for way in ("pandas", "arrow", "pandas", "arrow"):
        done = subprocess.run([sys.executable, "-m", "bench.startup_activity", "--measure", str(lake.root), way],
                              capture_output=True, text=True, check=True, timeout=900)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(runs[-1], flush=True)
    record("startup_activity", {
        "interactions": interactions, "users": config.users, "items": config.items, "days": config.days,
        "what": "a serving process's start-up read of the interaction history: every event into pandas (before) "
                "vs Lake.item_activity (Arrow, a batch at a time); each run in a fresh process",
        "runs": runs,
    })


if __name__ == "__main__":
    main()
