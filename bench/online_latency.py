"""Online read latency, p50 and p99, side by side in one run on the same Redis:
our fast path vs Feast's get_online_features vs Feast's HTTP feature server (`feast serve`),
for one user row and for 1,000 item rows of 20 float features.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import record
from bench.feature_repo_bench import FEATURES, NOW, build_repo, clear_redis
from ingestion.features.materialize import materialize
from recsys.features.online import FastOnlineFeatures
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import Settings

ITEMS = 20_000
PORT = 56566


def timed(call: Callable[[], object], repeats: int) -> dict[str, float]:
    call()  # warm up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(samples, 50)), 3),
            "p99_ms": round(float(np.percentile(samples, 99)), 3), "runs": repeats}


def http(body: dict[str, object]) -> Callable[[], object]:
    data = json.dumps(body).encode()

    def call() -> object:
        request = urllib.request.Request(f"http://127.0.0.1:{PORT}/get-online-features", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()
    return call


def start_server(repo: Path) -> subprocess.Popen[bytes]:
    feast = Path(sys.executable).with_name("feast")
    server = subprocess.Popen([str(feast), "--chdir", str(repo), "serve", "-h", "127.0.0.1", "-p", str(PORT),
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=1)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("feast serve did not come up")


def main() -> None:
    settings = build_repo(Settings.load(), ITEMS, name="feature_repo_latency")
    apply_repo(settings)
    clear_redis(settings)
    store = open_feature_store(settings)
    materialize(store, end=NOW)
    fast = FastOnlineFeatures(store, "bench_v1", max_age_seconds=3600)
    started = time.perf_counter()
    fast.refresh()
    refresh_s = time.perf_counter() - started
    rng = random.Random(0)
    items = [f"i{rng.randrange(ITEMS)}" for _ in range(1_000)]
    user_refs = [f"user_bench:f{k}" for k in range(FEATURES)]
    item_refs = [f"item_bench:f{k}" for k in range(FEATURES)]
    server = start_server(settings.features.repo_path)
    try:
        results = {
            "one_user_row": {
                "ours": timed(lambda: fast.user_features("u7"), 300),
                "feast_get_online_features": timed(lambda: store.get_online_features(
                    features=user_refs, entity_rows=[{"user_id": "u7"}]).to_dict(), 300),
                "feast_serve_http": timed(http({"features": user_refs, "entities": {"user_id": ["u7"]}}), 300),
            },
            "1000_item_rows": {
                "ours": timed(lambda: fast.item_features(items), 300),
                "feast_get_online_features": timed(lambda: store.get_online_features(
                    features=item_refs, entity_rows=[{"item_id": i} for i in items]).to_dict(), 30),
                "feast_serve_http": timed(http({"features": item_refs, "entities": {"item_id": items}}), 30),
            },
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    ours, theirs = results["1000_item_rows"]["ours"], results["1000_item_rows"]["feast_get_online_features"]
    record("online_latency", {
        "features_per_row": FEATURES, "items_in_table": ITEMS, "online_store": "redis (project's own server)",
        "refresh_item_table_s": round(refresh_s, 2), **results,
        "items_p50_speedup_vs_get_online_features": round(theirs["p50_ms"] / ours["p50_ms"], 1),
    })


if __name__ == "__main__":
    main()
