"""Materialization rows per second into Redis: ours vs Feast's local engine, same rows, one run.

Rows: one feature view of 20 float features (N entities, default 100,000). Each engine starts
from an empty Redis for the project; the figure is rows / wall seconds of the materialize call.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from bench.common import record
from bench.feature_repo_bench import NOW, build_repo, clear_redis
from ingestion.features.materialize import materialize
from recsys.features.store import apply_repo, inside_repo, open_feature_store
from recsys.settings import Settings


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    settings = build_repo(Settings.load(), rows)
    apply_repo(settings)
    clear_redis(settings)
    store = open_feature_store(settings)
    with inside_repo(settings.features.repo_path):
        started = time.perf_counter()
        store.materialize(NOW - timedelta(days=30), NOW, feature_views=["item_bench"])
        feast_s = time.perf_counter() - started
    clear_redis(settings)
    (settings.features.repo_path / "data" / "registry.db").unlink()  # forget the recorded interval
    apply_repo(settings)
    store = open_feature_store(settings)
    started = time.perf_counter()
    report = materialize(store, end=NOW, views=["item_bench"])[0]
    ours_s = time.perf_counter() - started
    assert report.rows == rows
    record("materialize_throughput", {
        "rows": rows, "features_per_row": 20, "online_store": "redis (project's own server)",
        "feast_local_engine": {"seconds": round(feast_s, 2), "rows_per_s": round(rows / feast_s)},
        "ours": {"seconds": round(ours_s, 2), "rows_per_s": round(rows / ours_s)},
        "speedup": round(feast_s / ours_s, 1),
    })


if __name__ == "__main__":
    main()
