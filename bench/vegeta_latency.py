"""Serving latency under open-loop constant-rate load from vegeta (Go), for the rates a Python generator cannot
hold on this machine (at 500 req/s `bench.serving_latency`'s generator sent up to 350 ms late).

    .venv/bin/python -m bench.vegeta_latency [--workers 2] [--seconds 20] [--full-rates 50,100,200]
        [--cached-rates 500] [--interactions-rates 500] [--set RECSYS_X=V ... --label -name]
        [--world var/bench/daily-10000000]

Same world, server and replay as `bench.serving_latency` (ml-latest-small served as `make serve` runs it, users
drawn at random over all of them, `as_of` the data's end, the full path with `serving.precomputed_reads=false`,
POST /interactions against the real Kafka when `infra/services.sh status` shows it up). vegeta sends at the
rate whatever the answers do and times each request from its send; every body is decoded for its rung. Each run
also records `server_cpu_ms_per_request`: the CPU seconds of the server's processes over the run (workers
included) per request sent, a figure the machine's noise moves far less than the tail.
Results: bench/results/vegeta_latency.json (a run per workers count; `bench.serving_latency` for the Python
generator's figures beside them).

`--world DIR` serves a world built by `bench.daily_scale` instead (DIR/data, its Feast repository and project,
its model store DIR/bentoml; e.g. the 10M world: 200k users, 50k items, the published two-tower version, ranker
and materialized features), in place: users drawn over all of its lake's users, GETs only.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from bench.common import CACHE, RESULTS, git_commit, machine, record
from bench.serving_latency import (
    BENCH_TOPIC,
    PORT,
    accepted_label,
    cpu_seconds,
    data_end,
    fresh_copy,
    items_of,
    recommendation_label,
    serve,
    services_up,
    small_world,
    users_of,
)
from recsys.settings import ROOT_DIR

OUT = RESULTS / "vegeta_latency.json"
API_KEY = "dev-key"


def vegeta() -> str:
    """The vegeta binary, installed by infra/vegeta.sh when missing."""
    done = subprocess.run(["bash", str(ROOT_DIR / "infra" / "vegeta.sh")], capture_output=True, text=True,
                          check=True, timeout=600)
    return done.stdout.strip().splitlines()[-1]


def target_lines(base: str, path: str, users: list[str], items: list[str], as_of: datetime, seed: int,
                 count: int) -> list[str]:
    """vegeta JSON targets: GETs of users drawn at random, or POST bodies of random (user, item) clicks."""
    rng = np.random.default_rng(seed)
    header = {"X-API-Key": [API_KEY]}
    lines = []
    for u, i in zip(rng.integers(0, len(users), count), rng.integers(0, len(items), count), strict=True):
        if path == "interactions":
            body = json.dumps({"user_id": users[u], "item_id": items[i], "action_type": "click"}).encode()
            headers = {**header, "Content-Type": ["application/json"]}
            lines.append(json.dumps({"method": "POST", "url": f"{base}/interactions",
                                     "body": base64.b64encode(body).decode(), "header": headers}))
        else:
            url = f"{base}/recommendations?user_id={quote(users[u])}&n=50&as_of={quote(as_of.isoformat())}"
            lines.append(json.dumps({"method": "GET", "url": url, "header": header}))
    return lines


def attack(binary: str, lines: list[str], rate: float, seconds: float) -> list[dict[str, Any]]:
    """One constant-rate run; each result as vegeta encodes it (code, latency ns, body base64, error)."""
    with tempfile.TemporaryDirectory() as folder:
        targets = Path(folder) / "targets.json"
        targets.write_text("\n".join(lines) + "\n")
        attacked = subprocess.run([binary, "attack", "-format=json", f"-targets={targets}", f"-rate={rate:g}/s",
                                   f"-duration={seconds:g}s", "-timeout=30s", "-max-body=-1", "-keepalive=true",
                                   "-workers=16"], capture_output=True, check=True, timeout=seconds + 120)
        encoded = subprocess.run([binary, "encode", "--to", "json"], input=attacked.stdout, capture_output=True,
                                 check=True, timeout=300)
    return [json.loads(line) for line in encoded.stdout.decode().splitlines() if line.strip()]


def summarise(results: list[dict[str, Any]], path: str, rate: float, seconds: float) -> dict[str, Any]:
    latencies = np.array([r["latency"] / 1e6 for r in results], dtype=np.float64)
    classify = accepted_label if path == "interactions" else recommendation_label
    labels: dict[str, int] = {}
    for r in results:
        label = classify(int(r["code"]), base64.b64decode(r.get("body") or b""))
        labels[label] = labels.get(label, 0) + 1
    answered = {k: v for k, v in labels.items() if not k.startswith("http ") and k != "unparsed"}
    figures: dict[str, Any] = {
        "rate": rate, "seconds": seconds, "requests": len(results),
        **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 3) for q in (50, 95, 99)},
        "max_ms": round(float(latencies.max()), 3),
        "answers": labels, "errors": sum(v for k, v in labels.items() if k.startswith("http ") or k == "unparsed"),
    }
    if path != "interactions" and answered:
        total = sum(answered.values())
        full = sum(v for k, v in answered.items() if k.partition("/")[0] == "full")
        figures["degraded_share"] = round(1 - full / total, 4)
        figures["cached_share"] = round(sum(v for k, v in answered.items() if k.endswith("/cached")) / total, 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--full-rates", default="50,100,200")
    parser.add_argument("--cached-rates", default="500")
    parser.add_argument("--interactions-rates", default="500")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=OUT, help="results JSON (a smoke run: somewhere else)")
    parser.add_argument("--set", action="append", default=[], metavar="RECSYS_X=V",
                        help="a settings variable for the served app (repeatable), e.g. an A/B of one setting")
    parser.add_argument("--label", default="", help="recorded as runs['<workers>w<label>']")
    parser.add_argument("--world", type=Path, default=None, help="a bench.daily_scale folder to serve instead")
    args = parser.parse_args()
    binary = vegeta()
    world_env: dict[str, str] = {}
    if args.world is not None:
        folder = args.world.resolve() / "data"
        world_env = {"RECSYS_FEATURES__REPO_PATH": str(args.world.resolve() / "feature_repo"),
                     "RECSYS_FEATURES__PROJECT": "daily_scale", "BENTOML_HOME": str(args.world.resolve() / "bentoml")}
    else:
        folder = fresh_copy(small_world())
    users, items, as_of = users_of(folder), items_of(folder), data_end(folder)
    base = f"http://127.0.0.1:{PORT}"
    common = {**world_env, "RECSYS_SERVING__WORKERS": str(args.workers), "RECSYS_SERVING__ALLOW_AS_OF": "true",
              **dict(setting.split("=", 1) for setting in args.set)}
    logs = CACHE / "logs"
    plan = [("full", {**common, "RECSYS_SERVING__PRECOMPUTED_READS": "false"}, args.full_rates),
            ("cached", common, args.cached_rates)]
    if services_up("kafka") and args.world is None:
        plan.append(("interactions", {**common, "RECSYS_PROFILE": "services", "RECSYS_KAFKA__TOPIC": BENCH_TOPIC},
                     args.interactions_rates))
    paths: dict[str, Any] = {}
    for path, env, rates in plan:
        if not rates.strip(","):  # no rate asked for this path: no server for it
            continue
        with serve(folder, logs / f"vegeta-{path}.log", env) as info:
            lines = target_lines(base, path, users, items, as_of, args.seed, 20_000)
            attack(binary, lines[:200], 20, 3)  # warm-up: first connections, caches, lazily built state
            runs = []
            for rate in [float(r) for r in rates.split(",") if r]:
                before = cpu_seconds(info["pid"])
                runs.append(summarise(attack(binary, lines, rate, args.seconds), path, rate, args.seconds))
                after = cpu_seconds(info["pid"])
                if before is not None and after is not None:  # the server's CPU per request sent (all processes)
                    runs[-1]["server_cpu_ms_per_request"] = round(1000 * (after - before) / runs[-1]["requests"], 2)
                print(path, json.dumps({k: v for k, v in runs[-1].items() if k != "answers"}), flush=True)
            paths[path] = {"server": info, "runs": runs}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    stamp = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "git": git_commit()}
    record("vegeta_latency", {
        "load": "vegeta attack (Go, open loop at a constant rate, 16 workers, keep-alive), latency from each send; "
                "users drawn at random (seeded) over all users; GETs at as_of = the data's end",
        "machine": machine(),
        "runs": {**previous.get("runs", {}), f"{args.workers}w{args.label}": {
            **stamp, "workers": args.workers, "world": str(args.world or "ml-latest-small"), "users": len(users),
            "settings": dict(setting.split("=", 1) for setting in args.set),
            "paths": paths}},
    }, args.out)


if __name__ == "__main__":
    main()
