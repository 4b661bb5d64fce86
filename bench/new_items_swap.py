"""New items into serving without retraining: what one swap of the in-memory tables costs at 10k and 1M items.

For a catalog of N items (clustered 128-d unit vectors, 20 categories, 3 of 5,000 tags each; exact index below
10,000 items, IVF-Flat above, as `ItemIndex.build` chooses), this times `apply_catalog_items` (content vectors,
copy-on-write tables, the index beside the built one) for 1 and 100 new items, the longest pause a concurrent
thread sees while it runs (the GIL held by the dict and set copies), one search before and after, and the
alternatives the design named: `faiss.clone_index` + add, and rebuilding a flat index from the whole matrix.

    .venv/bin/python -m bench.new_items_swap                   # 10k and 1M
    .venv/bin/python -m bench.new_items_swap --sizes 10000
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import faiss
import numpy as np
import pandas as pd

from bench.common import record
from bento_services.pipeline.retrieve import ItemAttributes, Retriever, ServingTables, apply_catalog_items
from recsys.models.candidates import build_tables
from recsys.models.item_index import ItemIndex

DIM = 128
CATEGORIES = 20
TAGS = 5_000
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def world(n: int, seed: int = 0) -> tuple[ServingTables, Retriever, np.ndarray]:
    rng = np.random.default_rng(seed)
    category = rng.integers(0, CATEGORIES, size=n)
    centres = rng.standard_normal((CATEGORIES, DIM)).astype(np.float32)
    matrix = centres[category] + 0.5 * rng.standard_normal((n, DIM), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = [f"i{k}" for k in range(n)]
    tags = rng.integers(0, TAGS, size=(n, 3))
    items = pd.DataFrame({"item_id": ids, "category": [f"c{c}" for c in category],
                          "tags": [[f"t{t}" for t in row] for row in tags], "is_active": True})
    events = pd.DataFrame({"user_id": ["u"] * 1000, "item_id": rng.choice(ids, size=1000),
                           "event_time": pd.Timestamp(NOW) - pd.to_timedelta(rng.integers(0, 86400 * 7, 1000), "s")})
    index = ItemIndex.build(matrix, ids, model_version="bench", data_start=NOW - timedelta(days=30), data_end=NOW)
    candidate_tables = build_tables(items, events, index, matrix, NOW)
    attributes = ItemAttributes(dict(zip(ids, items["category"])), set(), set())
    serving = ServingTables("bench", candidate_tables, "bench", candidate_tables.popular, attributes)
    return serving, Retriever(candidate_tables, nprobe=32), matrix


def new_rows(count: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "item_id": [f"new-{seed}-{k}" for k in range(count)],
        "category": [f"c{c}" for c in rng.integers(0, CATEGORIES, size=count)],
        "tags": [[f"t{t}" for t in row] for row in rng.integers(0, TAGS, size=(count, 3))],
        "is_active": True, "created_at": pd.Timestamp(NOW), "updated_at": pd.Timestamp(NOW),
    })


def longest_pause(work: Any) -> tuple[Any, float, float]:
    """Run `work()` while a thread wakes every 0.5 ms; (result, seconds, the longest gap between its wake-ups)."""
    gaps: list[float] = []
    running = True

    def tick() -> None:
        last = time.perf_counter()
        while running:
            time.sleep(0.0005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    time.sleep(0.05)
    gaps.clear()
    started = time.perf_counter()
    result = work()
    took = time.perf_counter() - started
    running = False
    thread.join()
    return result, took, max(gaps, default=0.0)


def search_ms(retriever: Retriever, query: np.ndarray, repeats: int = 200) -> float:
    index = retriever.tables.index
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        index.search(query, 350, nprobe=32)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000)


def measure(n: int) -> dict[str, Any]:
    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    tables, retriever, matrix = world(n)
    figures: dict[str, Any] = {"items": n, "index": retriever.tables.index.meta.kind,
                               "build_seconds": round(time.perf_counter() - started, 1)}
    query = matrix[:1]
    figures["search_ms_before"] = round(search_ms(retriever, query), 3)
    for count in (1, 100):
        rows = new_rows(count, seed=count)
        apply_catalog_items(tables, retriever, rows.iloc[:0], NOW)  # warm: nothing to do
        change, took, pause = longest_pause(lambda rows=rows: apply_catalog_items(tables, retriever, rows, NOW))
        assert len(change.placed) == count
        figures[f"swap_{count}_new_ms"] = round(took * 1000, 1)
        figures[f"swap_{count}_new_longest_pause_ms"] = round(pause * 1000, 1)
        if count == 100:
            figures["search_ms_after_100_new"] = round(search_ms(change.retriever, query), 3)
    extra = matrix[:100].copy()
    raw = retriever.tables.index.faiss_index
    started = time.perf_counter()
    clone = faiss.clone_index(raw)
    clone.add(extra)
    figures["alternative_clone_index_and_add_ms"] = round((time.perf_counter() - started) * 1000, 1)
    del clone
    started = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(np.vstack([matrix, extra]))
    figures["alternative_rebuild_flat_ms"] = round((time.perf_counter() - started) * 1000, 1)
    del flat
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    args = parser.parse_args()
    runs = [measure(n) for n in args.sizes]
    record("new_items_swap", {"runs": runs, "note": "one thread of FAISS; the pause is what a concurrent request "
                                                    "thread waits at most while the swap is built"})


if __name__ == "__main__":
    main()
