"""Latency of the hosted API under load on loopback: the full recommendation path, the cached path, interactions.

The API runs the way `make serve` runs it (`bentoml serve bento_services.service:Recsys`, our hosting
configuration), on a data directory of the benchmark's own (`--world`):

  small  a copy of `var/data` (ml-latest-small: 9.7k movies, 610 users, its candidate artifact); users active
         in the data's last year (60) get precomputed lists (`recsys precompute --active-days 365`)
  1m     a 1,000,000-item synthetic catalog built through the real formats (`bench.serving_world`)

Paths (users are split by the `cached` flag of their first answer):
  full      GET /recommendations for users without a precomputed list: the precomputed lookup misses, then
            candidate generation (up to 1,000 candidates from the quotas), features and ranking when a ranker
            is in the model store (else candidate-score order), post-processing
  cached    GET /recommendations for users with a precomputed list
  interactions  POST /interactions (validation, publish to the profile's bus, 202)

Each path: open loop at `--rate` requests per second (the targets' "p99 at 100 req/s"; latency counted from
each request's due time), then wrk closed loop at concurrency 1 and 8 for throughput. The per-key rate limit
is raised for the run. The open-loop generator is Python on the same two cores as the server.

    .venv/bin/python -m bench.serving_latency [--world small] [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import CACHE, record
from bench.loadgen import closed_loop, open_loop, served
from recsys.backends import open_lake
from recsys.settings import ROOT_DIR, Settings

PORT = 38120
KEY = {"X-API-Key": "dev-key"}
RESULTS = Path(__file__).resolve().parent / "results" / "serving_latency.json"


def small_world() -> Path:
    """A private copy of var/data, recent users precomputed (built once)."""
    folder = CACHE / "serving-small"
    if not (folder / ".complete").exists():
        source = Settings.load().data_path
        for part in ("lake", "embedded", "models", "ml-latest-small"):
            shutil.copytree(source / part, folder / part, dirs_exist_ok=True)
        _forget_precomputed(folder)  # the copy's lists (e.g. from `make demo`) would leave no full-path users
        precompute(folder, active_days=365)
        (folder / ".complete").touch()
    return folder


def _forget_precomputed(folder: Path) -> None:
    import sqlite3

    with sqlite3.connect(folder / "embedded" / "catalog.sqlite") as db:
        db.execute("DELETE FROM precomputed_recommendations")


def precompute(folder: Path, active_days: int) -> None:
    env = {"RECSYS_DATA_DIR": str(folder), "PATH": str(Path(sys.executable).parent), "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([str(Path(sys.executable).parent / "recsys"), "--profile", "local", "precompute", "--k", "100",
                    "--active-days", str(active_days)], check=True, env=env, cwd=ROOT_DIR, timeout=3600)


def users_of(folder: Path, limit: int = 2_000) -> list[str]:
    settings = Settings.load().model_copy(update={"data_dir": folder})
    table = open_lake(settings).interactions(columns=["user_id"])
    ids = table.column("user_id").unique().to_pylist()
    return [str(u) for u in ids[:limit]]


def _get(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers=KEY)
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.load(response))


def _histograms(base: str) -> dict[str, dict[str, list[float]]]:
    """{metric: {label value: [count, sum]}} of the API's GC-pause and stage histograms (/metrics)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        text = response.read().decode()
    found: dict[str, dict[str, list[float]]] = {"recsys_gc_pause_seconds": {}, "recsys_stage_seconds": {}}
    for line in text.splitlines():
        for metric, rows in found.items():
            for suffix, slot in (("_count", 0), ("_sum", 1)):
                if line.startswith(f"{metric}{suffix}{{"):
                    label = line.split('="')[1].split('"')[0]
                    rows.setdefault(label, [0.0, 0.0])[slot] = float(line.rsplit(" ", 1)[1])
    return found


def _deltas(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for label, (count, total) in after.items():
        n, seconds = count - before.get(label, [0, 0])[0], total - before.get(label, [0, 0])[1]
        if n:
            out[label] = {"count": int(n), "seconds": round(seconds, 4), "mean_ms": round(1e3 * seconds / n, 3)}
    return out


def split_users(base: str, users: list[str]) -> tuple[list[str], list[str]]:
    """(users answered from the precomputed layer, users answered by the full path)."""
    cached: list[str] = []
    full: list[str] = []
    for user in users:
        (cached if _get(f"{base}/recommendations?user_id={user}&n=50")["cached"] else full).append(user)
    return cached, full


def _path(base: str, name: str, users: list[str], args: argparse.Namespace) -> dict[str, Any]:
    if name == "interactions":
        url, method = f"{base}/interactions", "POST"
        bodies = [{"user_id": u, "item_id": "1", "action_type": "click"} for u in users]
        urls = [url]
    else:
        method, bodies = "GET", None
        urls = [f"{base}/recommendations?user_id={u}&n=50" for u in users]
    sample: dict[str, Any] = {}
    if method == "GET":
        answers = [_get(u) for u in urls[:20]]
        sample = {"degradation": sorted({a["degradation"] for a in answers}),
                  "cached": sorted({a["cached"] for a in answers}), "items": len(answers[0]["items"]),
                  "model_version": answers[0]["model_version"]}
    rate = args.full_rate if name == "full" and args.full_rate else args.rate
    open_loop(urls, rate, 3, method, bodies, KEY)  # warm-up
    before = _histograms(base)
    figures: dict[str, Any] = {"answers": sample, "users": len(users),
                               "open_loop": open_loop(urls, rate, args.seconds, method, bodies, KEY)}
    after = _histograms(base)
    figures["open_loop"]["gc"] = _deltas(before["recsys_gc_pause_seconds"], after["recsys_gc_pause_seconds"])
    figures["open_loop"]["stages"] = _deltas(before["recsys_stage_seconds"], after["recsys_stage_seconds"])
    for concurrency in (1, 8):
        figures[f"closed_loop_c{concurrency}"] = closed_loop(urls[0], concurrency, args.wrk_seconds, method,
                                                             bodies[0] if bodies else None, KEY)
    print(f"{name:12s} open loop {rate:.0f}/s: p50 {figures['open_loop']['p50_ms']} p95 "
          f"{figures['open_loop']['p95_ms']} p99 {figures['open_loop']['p99_ms']} ms; wrk c1 "
          f"{figures['closed_loop_c1']['rps']} req/s; {sample}; gc {figures['open_loop']['gc']}; stages "
          f"{ {k: v['mean_ms'] for k, v in figures['open_loop']['stages'].items()} }", flush=True)
    return figures


def _serve(folder: Path, log: Path, own_model_store: bool) -> Any:
    """The API over `folder`; the small world uses the default model store (the ranker `make demo` trained)."""
    env = {"RECSYS_DATA_DIR": str(folder), "RECSYS_PROFILE": "local", "RECSYS_SERVING__PORT": str(PORT),
           "RECSYS_SERVING__RATE_LIMIT_PER_SECOND": "1000000", "RECSYS_SERVING__RATE_LIMIT_BURST": "1000000",
           "BENTOML_DO_NOT_TRACK": "true"}
    if own_model_store:
        env["BENTOML_HOME"] = str(CACHE / "bentoml_home")
    command = [sys.executable, "-m", "bento_services", "serve"]
    return served(command, f"http://127.0.0.1:{PORT}/healthz", log, env=env, timeout_s=900)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["small", "1m"], default="small")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--full-rate", type=float, default=None, help="open-loop rate of the full path if not --rate")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--wrk-seconds", type=float, default=5)
    args = parser.parse_args()
    if args.world == "small":
        folder = small_world()
    else:
        from bench.serving_world import million_world

        folder = million_world()
    base = f"http://127.0.0.1:{PORT}"
    results: dict[str, Any] = {}
    with _serve(folder, CACHE / "logs" / f"serving-{args.world}.log", own_model_store=args.world != "small"):
        if args.world == "small":
            users = users_of(folder)
            cached, full = split_users(base, users)
        else:  # probing 20k users one by one takes too long at 1M: the world knows whose lists it precomputed
            from bench.serving_world import PRECOMPUTED_USERS, recent_users

            users = recent_users(folder, 2 * PRECOMPUTED_USERS)
            cached, full = users[:PRECOMPUTED_USERS], users[PRECOMPUTED_USERS:]
        # The full path last: its abandoned slow stage calls finish in the background and would load the others.
        results["cached"] = _path(base, "cached", cached, args)
        results["interactions"] = _path(base, "interactions", users, args)
        results["full"] = _path(base, "full", full, args)
    previous = json.loads(RESULTS.read_text()).get("worlds", {}) if RESULTS.exists() else {}
    workers = Settings.load().serving.workers  # RECSYS_SERVING__WORKERS reaches the served API too
    key = args.world if workers == 1 else f"{args.world}-{workers}-workers"
    previous[key] = {"workers": workers, "data_dir": str(folder), "users_cycled": len(users), "rate": args.rate,
                            "full_rate": args.full_rate or args.rate,
                            "seconds": args.seconds, "paths": results}
    record("serving_latency", {
        "hosting": "bentoml serve bento_services.service:Recsys (make serve), local profile, 1 worker",
        "load": "open loop: bench/loadgen.py at the given rate (latency from due time); closed loop: wrk -t1",
        "worlds": previous,
    })


if __name__ == "__main__":
    main()
