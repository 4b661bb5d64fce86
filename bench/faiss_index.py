"""Item index benchmark: recall@500 against exact search and one-query latency for IVF-Flat (nprobe sweep)
and HNSW (efSearch sweep) on 1M clustered 128-d vectors, then IVF-PQ on 10M vectors built in chunks.

The target the design names is recall@500 >= 0.95 at p99 < 5 ms for one query on one thread. Searches run
on one FAISS thread; builds and exact ground truth use ``--build-threads`` (2 by default), because a
one-thread HNSW or 10M build does not fit in a benchmark run on this machine.

    .venv/bin/python -m bench.faiss_index                       # full run: 1M, then 10M IVF-PQ
    .venv/bin/python -m bench.faiss_index --items 100000 --big-items 0
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import faiss
import numpy as np
import psutil

from bench.common import RESULTS, record
from recsys.models.item_index import ItemIndex

DIM = 128
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EF_SEARCHES = (500, 750, 1000, 1500, 2000, 3000)  # FAISS searches HNSW with max(efSearch, k), k = 500
BIG_NPROBES = (16, 32, 64, 128, 256)
CHUNK = 1_000_000
TARGET = {"recall_at_500": 0.95, "p99_ms": 5.0}


class Clusters:
    """A mixture of Gaussian clusters on the unit sphere; points are centre + noise, normalised."""

    def __init__(self, count: int, spread: float, seed: int) -> None:
        self.seed, self.spread = seed, spread
        self.centres = _normalise(np.random.default_rng([seed, 0]).standard_normal((count, DIM), np.float32))

    def sample(self, n: int, stream: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, stream])
        which = rng.integers(0, len(self.centres), n)
        noise = rng.standard_normal((n, DIM), np.float32) * np.float32(self.spread / np.sqrt(DIM))
        return _normalise(self.centres[which] + noise)

    def chunks(self, n: int, size: int = CHUNK) -> Iterator[np.ndarray]:
        for number, start in enumerate(range(0, n, size)):
            yield self.sample(min(size, n - start), stream=100 + number)


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def exact_top(base: np.ndarray, queries: np.ndarray, k: int, offset: int = 0) -> Top:
    flat = faiss.IndexFlatIP(DIM)
    flat.add(base)
    scores, labels = flat.search(queries, min(k, len(base)))
    return scores, labels + offset


Top = tuple[np.ndarray, np.ndarray]


def merge_top(a: Top, b: Top, k: int) -> Top:
    scores, labels = np.hstack([a[0], b[0]]), np.hstack([a[1], b[1]])
    keep = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, keep, 1), np.take_along_axis(labels, keep, 1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(row[row >= 0].tolist()) & set(true.tolist())) / len(true) for row, true in zip(found, truth)]
    return round(float(np.mean(hits)), 4)


def one_at_a_time(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> dict[str, Any]:
    """Search each query alone, as serving does; latency percentiles and the labels found."""
    for query in queries[:5]:
        search(query[None, :])  # warm up caches
    found, samples = [], []
    for query in queries:
        started = time.perf_counter()
        found.append(search(query[None, :])[0])
        samples.append((time.perf_counter() - started) * 1000)
    return {"labels": np.vstack(found), "p50_ms": round(float(np.percentile(samples, 50)), 3),
            "p99_ms": round(float(np.percentile(samples, 99)), 3)}


def sweep(index: Any, knob: Any, name: str, values: tuple[int, ...], queries: np.ndarray, truth: np.ndarray,
          k: int) -> list[dict[str, Any]]:
    """For each value of ``knob.<name>`` (nprobe, efSearch): recall@k and one-query latency."""
    rows = []
    for value in values:
        setattr(knob, name, value)
        timing = one_at_a_time(lambda q: index.search(q, k)[1], queries)
        row = {name: value, "recall_at_500": recall(timing.pop("labels"), truth), **timing}
        row["meets_target"] = row["recall_at_500"] >= TARGET["recall_at_500"] and row["p99_ms"] < TARGET["p99_ms"]
        rows.append(row)
        say(f"  {row}")
    return rows


def million(args: argparse.Namespace, clusters: Clusters) -> dict[str, Any]:
    say(f"generating {args.items:,} items and {args.queries} queries")
    base = np.vstack(list(clusters.chunks(args.items)))
    queries = clusters.sample(args.queries, stream=1)
    faiss.omp_set_num_threads(args.build_threads)
    started = time.perf_counter()
    truth = np.vstack([exact_top(base, queries[i:i + 100], args.k)[1] for i in range(0, len(queries), 100)])
    say(f"exact ground truth in {time.perf_counter() - started:.1f}s")
    out: dict[str, Any] = {"items": args.items, "queries": args.queries, "k": args.k}
    started = time.perf_counter()
    item_index = ItemIndex.build(base, [f"i{i}" for i in range(len(base))], model_version="synthetic",
                                 data_start=datetime(2024, 1, 1), data_end=datetime(2024, 1, 31),
                                 kind="ivf_flat", nlist=args.nlist, seed=args.seed)
    ivf: Any = item_index.faiss_index
    out["ivf_flat"] = {"nlist": ivf.nlist, "build_s": round(time.perf_counter() - started, 1),
                       "built_with": "ItemIndex.build (k-means on a seeded sample of nlist*128 points)"}
    say(f"IVF-Flat nlist {ivf.nlist} built in {out['ivf_flat']['build_s']}s; nprobe sweep on 1 thread")
    faiss.omp_set_num_threads(1)
    out["ivf_flat"]["sweep"] = sweep(ivf, ivf, "nprobe", NPROBES, queries, truth, args.k)
    api = one_at_a_time(lambda q: np.array([len(item_index.search(q, args.k, nprobe=32)[0])]), queries)
    out["ivf_flat"]["item_index_search_nprobe_32"] = {"p50_ms": api["p50_ms"], "p99_ms": api["p99_ms"],
                                                      "note": "through ItemIndex.search, incl. id mapping"}
    if not args.skip_hnsw:
        out["hnsw"] = hnsw(args, base, queries, truth)
    return out


def hnsw(args: argparse.Namespace, base: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    faiss.omp_set_num_threads(args.build_threads)
    index = faiss.IndexHNSWFlat(DIM, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    started = time.perf_counter()
    for start in range(0, len(base), 100_000):
        index.add(base[start:start + 100_000])
        say(f"  HNSW added {start + 100_000:,} ({time.perf_counter() - started:.0f}s)")
    build_s = round(time.perf_counter() - started, 1)
    say(f"HNSW M={args.hnsw_m} efConstruction={args.ef_construction} built in {build_s}s; efSearch sweep")
    faiss.omp_set_num_threads(1)
    rows = sweep(index, index.hnsw, "efSearch", EF_SEARCHES, queries, truth, args.k)
    return {"M": args.hnsw_m, "efConstruction": args.ef_construction, "build_s": build_s,
            "build_threads": args.build_threads, "sweep": rows}


class PeakRss:
    """Samples this process's resident memory every 0.2 s, so a stage's peak is known (psutil has no peak)."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def ten_million(args: argparse.Namespace, clusters: Clusters) -> dict[str, Any]:
    """IVF-PQ over ``--big-items`` vectors that never exist all at once: generated, added and scanned in chunks."""
    queries = clusters.sample(args.big_queries, stream=2)
    with PeakRss() as rss:
        faiss.omp_set_num_threads(args.build_threads)
        index: Any = faiss.index_factory(DIM, f"IVF{args.big_nlist},PQ{args.pq_bytes}x8", faiss.METRIC_INNER_PRODUCT)
        index.do_polysemous_training = False
        index.cp.niter, index.cp.seed = args.kmeans_iters, args.seed
        train_size = min(args.big_items, args.big_nlist * 64)
        started = time.perf_counter()
        index.train(clusters.sample(train_size, stream=3))
        train_s = time.perf_counter() - started
        say(f"IVF-PQ nlist {args.big_nlist} trained on {train_size:,} sampled points in {train_s:.0f}s")
        truth: Top | None = None
        add_s = 0.0
        for number, chunk in enumerate(clusters.chunks(args.big_items)):
            started = time.perf_counter()
            index.add(chunk)
            add_s += time.perf_counter() - started
            top = exact_top(chunk, queries, args.k, offset=number * CHUNK)
            truth = top if truth is None else merge_top(truth, top, args.k)
            say(f"  added {index.ntotal:,} ({add_s:.0f}s adding)")
        del chunk
        assert truth is not None
        memory = faiss.serialize_index(index).nbytes
        faiss.omp_set_num_threads(1)
        rows = sweep(index, index, "nprobe", BIG_NPROBES, queries, truth[1], args.k)
    return {"items": args.big_items, "queries": args.big_queries, "nlist": args.big_nlist, "pq_bytes": args.pq_bytes,
            "kmeans_iters": args.kmeans_iters, "train_points": train_size, "train_s": round(train_s, 1),
            "add_s": round(add_s, 1), "build_s": round(train_s + add_s, 1),
            "index_bytes": memory, "index_gib": round(memory / 2**30, 3), "chunk_items": CHUNK,
            "peak_rss_gib": round(rss.peak / 2**30, 2), "sweep": rows,
            "note": "PQ scores are approximate, no re-ranking with exact vectors; exact top-k merged chunk by chunk"}


def plot(figures: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    one = figures["million"]
    series = [(f"IVF-Flat nlist {one['ivf_flat']['nlist']} (nprobe)", one["ivf_flat"]["sweep"], "nprobe")]
    if "hnsw" in one:
        series.append((f"HNSW M={one['hnsw']['M']} (efSearch)", one["hnsw"]["sweep"], "efSearch"))
    if "ivf_pq" in figures:
        series.append((f"IVF-PQ {figures['ivf_pq']['items']:,} items (nprobe)", figures["ivf_pq"]["sweep"], "nprobe"))
    for label, rows, knob in series:
        ax.plot([r["p99_ms"] for r in rows], [r["recall_at_500"] for r in rows], marker="o", label=label)
        for r in rows:
            ax.annotate(str(r[knob]), (r["p99_ms"], r["recall_at_500"]), fontsize=7, xytext=(3, -8),
                        textcoords="offset points")
    ax.axhline(TARGET["recall_at_500"], color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(TARGET["p99_ms"], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="p99 latency of one query, one thread (ms)", ylabel="recall@500 vs exact",
           title=f"Item index on {one['items']:,} clustered 128-d vectors")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "faiss_index.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--nlist", type=int, default=None, help="IVF-Flat lists; default about 4*sqrt(items)")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.5,
                        help="noise norm relative to the unit centre; 1.0 keeps every top-500 inside one cluster")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument("--big-items", type=int, default=10_000_000, help="IVF-PQ stage size; 0 skips it")
    parser.add_argument("--big-queries", type=int, default=100)
    parser.add_argument("--big-nlist", type=int, default=8192)
    parser.add_argument("--pq-bytes", type=int, default=32)
    parser.add_argument("--kmeans-iters", type=int, default=10, help="IVF-PQ k-means iterations")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clusters = Clusters(args.clusters, args.spread, args.seed)
    figures: dict[str, Any] = {
        "data": {"dim": DIM, "clusters": args.clusters, "spread": args.spread, "seed": args.seed,
                 "kind": "Gaussian clusters on the unit sphere, normalised; queries from the same mixture"},
        "threads": {"search": 1, "build_and_ground_truth": args.build_threads},
        "target": TARGET,
        "million": million(args, clusters),
    }
    if args.big_items:
        figures["ivf_pq"] = ten_million(args, clusters)
    figures["meeting_target"] = [
        f"{name} {row.get('nprobe', row.get('efSearch'))}" for name, rows in
        [("IVF-Flat nprobe", figures["million"]["ivf_flat"]["sweep"]),
         ("HNSW efSearch", figures["million"].get("hnsw", {}).get("sweep", [])),
         ("IVF-PQ nprobe", figures.get("ivf_pq", {}).get("sweep", []))]
        for row in rows if row["meets_target"]]
    record("faiss_index", figures)
    plot(figures)


if __name__ == "__main__":
    main()
