"""Latency of the hosted API under open-loop load on loopback: full recommendation path, cached path, interactions.

The API runs the way `make serve` runs it (`python -m bento_services serve`: `bentoml serve` of
bento_services.service:Recsys with our hosting configuration), `--workers` worker processes, on a private
copy of a world (`--world`):

  small  ml-latest-small as the local profile has it (`var/data` after `make demo`: 9.7k movies, 610 users,
         the candidate artifact, the ranker of the default BentoML model store, the materialized features
         of `feature_repo/`), copied once to var/bench/serving-small/world with a precomputed list for every
         user; each run serves a fresh copy of it (var/bench/serving-small/run), since POST /interactions
         writes to its stores, its lake and its online feature store
  1m     a 1,000,000-item synthetic catalog built through the real formats (`bench.serving_world`; candidate
         scores only: no ranker, no features)

ml-latest-small ends in 2018, so every stored feature is past its TTL today and a request answered "now"
keeps candidate order (`stale_features`). The replay therefore serves with `serving.allow_as_of=true` and sends
`as_of=<the data's end>` (`parse_as_of("data-end")`: one second after the lake's newest event) on every GET;
`--as-of now` sends none.

Paths, each at its rates (`--full-rates`, `--cached-rates`, `--interactions-rates`), users drawn uniformly at
random (seeded) over all users of the world:
  full          GET /recommendations with `serving.precomputed_reads=false`: every request takes the full path
                (candidates, features, ranking of `serving.rank_depth` candidates, post-processing)
  cached        GET /recommendations answered from the precomputed lists (every user has one in `small`)
  interactions  POST /interactions (a random user and item, 202 once the bus holds it): against the real
                Kafka (the `services` profile, on a topic of the benchmark's own) when `infra/services.sh
                status` shows Kafka up, else the local profile's in-process bus (`--interactions-profile`)

Each rate: open loop for `--seconds` (latency from each request's scheduled send time), after a warm-up and
once the server is back to its idle latency. Every answer's body is parsed for `degradation` and `cached`:
the result gives the share of each rung, the degraded share (everything but `full`; a cached answer counts as
full when its degradation is `full`), errors, statuses, p50/p95/p99/max (overall and per rung) and the rate
achieved. The per-key rate limit is raised for the run. The load generator is Python on the same cores as
the server (`send_lag_ms` says whether it kept up).

    .venv/bin/python -m bench.serving_latency --workers 1 --seconds 20      # 10-12 minutes on two cores
    .venv/bin/python -m bench.serving_latency --seconds 3 --full-rates 10 --cached-rates 50 \\
        --interactions-rates 50 --out var/bench/smoke/serving_latency.json  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import cycle
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from bench.common import CACHE, RESULTS, git_commit, machine, record
from bench.loadgen import closed_loop, open_loop, served
from bench.serving_report import markdown, plot, summary_line
from recsys.backends import open_lake
from recsys.settings import ROOT_DIR, Settings

PORT = 38120
KEY = {"X-API-Key": "dev-key"}
OUT = RESULTS / "serving_latency.json"
SMALL = CACHE / "serving-small"
#: The topic POST /interactions publishes to on the `services` profile: the benchmark's own, so that no
#: consumer of the real `interaction-events` stores its events.
BENCH_TOPIC = "bench-serving-interactions"
#: The issue's targets: p99 in milliseconds at a rate (requests per second), drawn on the plot.
LIST_MARGIN = timedelta(hours=2)  # precomputed lists must outlive the run by this much


# -- worlds ---------------------------------------------------------------------------------------------------
def small_world(refresh: bool = False) -> Path:
    """var/bench/serving-small/world: a copy of var/data and feature_repo/, every user's list precomputed."""
    world = SMALL / "world"
    if refresh or not (world / ".complete").exists():
        shutil.rmtree(world, ignore_errors=True)
        source = Settings.load().data_path
        for part in ("lake", "embedded", "models", "ml-latest-small"):
            shutil.copytree(source / part, world / part)
        shutil.copytree(Settings.load().features.repo_path, world / "feature_repo",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (world / ".complete").write_text(json.dumps({
            "source": str(source), "copied_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "candidates": (world / "models" / "CURRENT").read_text().strip()}) + "\n")
    if _lists_expire(world) < datetime.now(UTC) + LIST_MARGIN:
        precompute(world, as_of="data-end")
    return world


def _world_env(folder: Path) -> dict[str, str]:
    env = {"RECSYS_DATA_DIR": str(folder), "RECSYS_PROFILE": "local", "BENTOML_DO_NOT_TRACK": "true"}
    if (folder / "feature_repo").exists():
        env["RECSYS_FEATURES__REPO_PATH"] = str(folder / "feature_repo")
    return env


def _lists_expire(folder: Path) -> datetime:
    """When the first precomputed list expires (the epoch when a user of the lake has none)."""
    with sqlite3.connect(folder / "embedded" / "catalog.sqlite") as db:
        rows = db.execute("SELECT COUNT(DISTINCT user_id), MIN(expires_at) FROM precomputed_recommendations "
                          "WHERE recommendation_type = 'top_n'").fetchone()
    if not rows[0] or rows[0] < 0.9 * len(users_of(folder)):  # a user with nothing to rank gets no list
        return datetime.fromtimestamp(0, UTC)
    return datetime.fromisoformat(rows[1])


def precompute(folder: Path, as_of: str | None = None, active_days: int | None = None) -> None:
    """`recsys precompute --k 100` over the world (as at `as_of`, e.g. `data-end`), through the CLI."""
    binary = Path(sys.executable).parent / "recsys"
    command = [str(binary), "--profile", "local", "precompute", "--k", "100"]
    command += ["--as-of", as_of] if as_of else []
    command += ["--active-days", str(active_days)] if active_days is not None else []
    env = {**os.environ, **_world_env(folder), "PATH": f"{binary.parent}:{os.environ.get('PATH', '')}"}
    subprocess.run(command, check=True, env=env, cwd=ROOT_DIR, timeout=3600)


def fresh_copy(world: Path) -> Path:
    """The world as built, for one run (its writes do not reach the next run)."""
    run = world.parent / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(world, run)
    return run


def _settings(folder: Path) -> Settings:
    return Settings.load().model_copy(update={"data_dir": folder, "profile": "local"})


def users_of(folder: Path) -> list[str]:
    """Every user of the world's lake, sorted."""
    table = open_lake(_settings(folder)).interactions(columns=["user_id"])
    return sorted(str(u) for u in table.column("user_id").unique().to_pylist())


def items_of(folder: Path, limit: int = 5_000) -> list[str]:
    table = open_lake(_settings(folder)).interactions(columns=["item_id"])
    return sorted(str(i) for i in table.column("item_id").unique().to_pylist())[:limit]


def data_end(folder: Path) -> datetime:
    """The replay moment: `parse_as_of("data-end")`, one second after the lake's newest event."""
    from bento_services.pipeline.batch import parse_as_of

    moment = parse_as_of("data-end", _settings(folder))
    assert moment is not None
    return moment


# -- the served API -------------------------------------------------------------------------------------------
def services_up(*names: str) -> bool:
    """Whether `infra/services.sh status` reports each of `names` up (it starts or stops nothing)."""
    try:
        out = subprocess.run(["bash", str(ROOT_DIR / "infra" / "services.sh"), "status"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return all(any(line.startswith(f"{name}: up") for line in out.splitlines()) for name in names)


@contextmanager
def serve(folder: Path, log: Path, settings_env: dict[str, str], own_model_store: bool = False,
          ) -> Iterator[dict[str, Any]]:
    """The API over `folder` as `make serve` runs it; yields {startup_s, env} and, on exit, adds `rss_mib`
    (the server's process tree after the load)."""
    env = {**_world_env(folder), "RECSYS_SERVING__PORT": str(PORT),
           "RECSYS_SERVING__RATE_LIMIT_PER_SECOND": "1000000", "RECSYS_SERVING__RATE_LIMIT_BURST": "1000000",
           **settings_env}
    if env.get("RECSYS_PROFILE") == "services":  # its feature store is the services one (infra/feast)
        env.pop("RECSYS_FEATURES__REPO_PATH", None)
    if own_model_store:
        env["BENTOML_HOME"] = str(CACHE / "bentoml_home")
    command = [sys.executable, "-m", "bento_services", "serve"]
    started = time.perf_counter()
    with served(command, f"http://127.0.0.1:{PORT}/healthz", log, env=env, timeout_s=900) as process:
        info: dict[str, Any] = {"startup_s": round(time.perf_counter() - started, 1),
                                "env": {k: v for k, v in env.items() if k.startswith("RECSYS_SERVING__")
                                        or k in ("RECSYS_PROFILE", "RECSYS_KAFKA__TOPIC")}}
        info["readyz"] = _readiness(f"http://127.0.0.1:{PORT}")
        info["pid"] = process.pid
        yield info
        del info["pid"]
        info["rss_mib"] = _rss_mib(process.pid)


def _readiness(base: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=30) as response:
            return dict(json.load(response).get("checks", {}))
    except urllib.error.HTTPError as error:
        return dict(json.load(error).get("checks", {}))
    except OSError as error:
        return {"error": repr(error)}


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of the server's process tree so far (its workers included)."""
    try:
        import psutil

        root = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])
    except Exception:  # noqa: BLE001 - a figure of convenience; a process may be gone
        return None


def _rss_mib(pid: int) -> float | None:
    try:
        import psutil

        root = psutil.Process(pid)
        return round(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20, 1)
    except Exception:  # noqa: BLE001 - a figure of convenience; the process may be gone
        return None


def _get(url: str) -> tuple[float, dict[str, Any]]:
    request = urllib.request.Request(url, headers=KEY)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = dict(json.load(response))
    return (time.perf_counter() - started) * 1e3, body


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


# -- answers --------------------------------------------------------------------------------------------------
def recommendation_label(status: int, body: bytes) -> str:
    """`<degradation>` or `<degradation>/cached` for a 200, `http <status>` otherwise."""
    if status != 200:
        return f"http {status}"
    try:
        answer = json.loads(body)
        return f"{answer['degradation']}{'/cached' if answer['cached'] else ''}"
    except (ValueError, KeyError, TypeError):
        return "unparsed"


def accepted_label(status: int, body: bytes) -> str:
    return "accepted" if status == 202 else f"http {status}"


def answer_shares(figures: dict[str, Any]) -> dict[str, Any]:
    """Shares of the parsed answers to GET /recommendations (the 200s): each rung, cached, degraded (all but
    `full`; a cached answer with degradation `full` is full); and `full_of_sent`, full answers over requests
    sent (errors and other statuses count against it)."""
    counts: dict[str, int] = figures.get("answers", {})
    rungs: dict[str, int] = {}
    cached = 0
    for label, n in counts.items():
        if label.startswith("http ") or label in ("unparsed", "None"):
            continue
        rung, _, flag = label.partition("/")
        rungs[rung] = rungs.get(rung, 0) + n
        cached += n if flag == "cached" else 0
    answered = sum(rungs.values())
    if not answered:
        return {"answered": 0}
    full = rungs.get("full", 0)
    return {"answered": answered, "rungs": {k: round(v / answered, 4) for k, v in sorted(rungs.items())},
            "cached_share": round(cached / answered, 4), "degraded_share": round(1 - full / answered, 4),
            "full_of_sent": round(full / max(figures["requests"], 1), 4)}


def accepted_shares(figures: dict[str, Any]) -> dict[str, Any]:
    """POST /interactions: the share of requests sent that were accepted (202)."""
    accepted = figures.get("answers", {}).get("accepted", 0)
    return {"answered": accepted, "accepted_of_sent": round(accepted / max(figures["requests"], 1), 4)}


# -- one path -------------------------------------------------------------------------------------------------
Target = tuple[list[str], str, list[dict[str, Any]] | None, Callable[[int, bytes], str]]


def targets(base: str, path: str, users: list[str], items: list[str], as_of: datetime | None, seed: int) -> Target:
    """(urls, method, bodies, classify) of a path: one GET per user, or POST bodies of random (user, item)."""
    if path == "interactions":
        rng = np.random.default_rng(seed)
        bodies = [{"user_id": users[u], "item_id": items[i], "action_type": "click"}
                  for u, i in zip(rng.integers(0, len(users), 4_000), rng.integers(0, len(items), 4_000),
                                  strict=True)]
        return [f"{base}/interactions"], "POST", bodies, accepted_label
    moment = f"&as_of={quote(as_of.isoformat())}" if as_of is not None else ""
    return [f"{base}/recommendations?user_id={quote(u)}&n=50{moment}" for u in users], "GET", None, recommendation_label


def _sample(urls: list[str], count: int = 20) -> dict[str, Any]:
    answers = [_get(u)[1] for u in urls[:: max(1, len(urls) // count)][:count]]
    return {"degradation": sorted({a["degradation"] for a in answers}),
            "cached": sorted({a["cached"] for a in answers}), "items": len(answers[0]["items"]),
            "model_version": sorted({a["model_version"] for a in answers})}


def _settle(urls: list[str], method: str, idle_ms: float, limit_s: float = 90.0) -> float:
    """Wait until three requests in a row answer within `idle_ms` (a backlog drained); returns seconds waited."""
    started = time.perf_counter()
    time.sleep(1.0)
    if method != "GET":
        return round(time.perf_counter() - started, 1)
    streak = 0
    for url in cycle(urls):
        if time.perf_counter() - started > limit_s or streak == 3:
            break
        try:
            streak = streak + 1 if _get(url)[0] <= idle_ms else 0
        except OSError:
            streak = 0
            time.sleep(0.5)
    return round(time.perf_counter() - started, 1)


def run_path(base: str, path: str, target: Target, rates: list[float], args: argparse.Namespace,
             workers: int) -> dict[str, Any]:
    urls, method, bodies, classify = target
    figures: dict[str, Any] = {"targets": len(bodies) if bodies else len(urls), "rates": {}}
    if method == "GET":
        figures["sample"] = _sample(urls)
    if args.warmup_seconds:
        open_loop(urls, min(rates[0], 20.0), args.warmup_seconds, method, bodies, KEY, seed=args.seed + 1)
    idle = [_get(u)[0] for u in urls[:5]] if method == "GET" else [0.0]
    idle_ms = max(50.0, 3 * statistics.median(idle))
    for index, rate in enumerate(sorted(rates)):
        settled = _settle(urls, method, idle_ms)
        before = _histograms(base)
        run = open_loop(urls, rate, args.seconds, method, bodies, KEY, seed=args.seed + 10 + index,
                        classify=classify, timeout_s=args.timeout)
        after = _histograms(base)
        run.update(answer_shares(run) if method == "GET" else accepted_shares(run))
        run["settle_s"] = settled
        run["gc"] = _deltas(before["recsys_gc_pause_seconds"], after["recsys_gc_pause_seconds"])
        run["stages"] = _deltas(before["recsys_stage_seconds"], after["recsys_stage_seconds"])
        figures["rates"][f"{rate:g}"] = run
        print(summary_line(path, run), flush=True)
    if args.wrk_seconds:
        for concurrency in (1, 8):  # one URL (wrk), for throughput only
            figures[f"closed_loop_c{concurrency}"] = closed_loop(urls[0], concurrency, args.wrk_seconds, method,
                                                                 bodies[0] if bodies else None, KEY)
    if workers > 1:
        figures["note"] = "gc and stages come from /metrics of whichever worker answered it"
    return figures


def _rates(text: str) -> list[float]:
    return [float(r) for r in text.split(",") if r.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["small", "1m"], default="small")
    parser.add_argument("--refresh-world", action="store_true", help="copy var/data and feature_repo/ again")
    parser.add_argument("--workers", type=int, default=None, help="API worker processes (serving.workers)")
    parser.add_argument("--rank-depth", type=int, default=None, help="serving.rank_depth of the served API")
    parser.add_argument("--paths", default="full,cached,interactions")
    parser.add_argument("--full-rates", type=_rates, default=_rates("30,50,100,200"))
    parser.add_argument("--cached-rates", type=_rates, default=_rates("500"))
    parser.add_argument("--interactions-rates", type=_rates, default=_rates("500"))
    parser.add_argument("--interactions-profile", choices=["auto", "services", "local"], default="auto",
                        help="auto: services when infra/services.sh status shows Kafka up")
    parser.add_argument("--seconds", type=float, default=20, help="open-loop seconds per rate")
    parser.add_argument("--warmup-seconds", type=float, default=3)
    parser.add_argument("--timeout", type=float, default=30, help="seconds before a request counts as an error")
    parser.add_argument("--as-of", choices=["data-end", "now"], default="data-end")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--wrk-seconds", type=float, default=0, help="also wrk closed loop c1/c8 (one URL)")
    parser.add_argument("--out", type=Path, default=OUT, help="results JSON (.md and .png beside it)")
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    workers = args.workers or Settings.load().serving.workers
    common_env = {"RECSYS_SERVING__WORKERS": str(workers), "RECSYS_SERVING__ALLOW_AS_OF": "true"}
    if args.rank_depth is not None:
        common_env["RECSYS_SERVING__RANK_DEPTH"] = str(args.rank_depth)
    rank_depth = args.rank_depth or Settings.load().serving.rank_depth

    if args.world == "small":
        world = small_world(args.refresh_world)
        folder = fresh_copy(world)
        users = users_of(folder)
        cached_users = users
        meta = json.loads((world / ".complete").read_text())
    else:
        from bench.serving_world import PRECOMPUTED_USERS, million_world, recent_users

        folder = world = million_world()
        users = users_of(folder)
        cached_users = recent_users(folder, PRECOMPUTED_USERS)  # the users `precompute_some` gave a list
        meta = {"source": "bench.serving_world"}
    as_of = data_end(folder) if args.as_of == "data-end" else None
    items = items_of(folder)
    base = f"http://127.0.0.1:{PORT}"
    log_dir = CACHE / "logs"
    own_store = args.world != "small"
    servers: dict[str, Any] = {}
    results: dict[str, Any] = {}

    def measure(path: str, who: list[str], rates: list[float]) -> None:
        results[path] = {"users": len(who), **run_path(base, path, targets(base, path, who, items, as_of, args.seed),
                                                        rates, args, workers)}

    # The full path first and on a server of its own (its abandoned slow stage calls would load the others);
    # interactions last, since they write to the world.
    if "full" in paths:
        env = {**common_env, "RECSYS_SERVING__PRECOMPUTED_READS": "false"}
        with serve(folder, log_dir / f"serving-{args.world}-full.log", env, own_store) as info:
            servers["full"] = info
            measure("full", users, args.full_rates)
    bus = args.interactions_profile
    if bus == "auto":
        bus = "services" if "interactions" in paths and services_up("kafka") else "local"
    local_interactions = "interactions" in paths and bus == "local"
    if "cached" in paths or local_interactions:
        with serve(folder, log_dir / f"serving-{args.world}-cached.log", common_env, own_store) as info:
            servers["cached"] = info
            if "cached" in paths:
                measure("cached", cached_users, args.cached_rates)
            if local_interactions:
                measure("interactions", users, args.interactions_rates)
                results["interactions"]["bus"] = "local profile: in-process bus, every consumer before 202"
    if "interactions" in paths and bus == "services":
        env = {**common_env, "RECSYS_PROFILE": "services", "RECSYS_KAFKA__TOPIC": BENCH_TOPIC}
        with serve(folder, log_dir / f"serving-{args.world}-interactions.log", env, own_store) as info:
            servers["interactions"] = info
            measure("interactions", users, args.interactions_rates)
            results["interactions"]["bus"] = (f"services profile: Kafka, topic {BENCH_TOPIC} (acks=all); only the "
                                              "bus serves this path (the world is not in the services stores)")

    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs: dict[str, Any] = previous.get("runs", {})
    key = f"{args.world}-{workers}w" + (f"-depth{args.rank_depth}" if args.rank_depth is not None else "")
    stamp = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "git": git_commit()}
    for figures in results.values():
        figures.update(stamp)
    earlier = runs.get(key, {})  # a run of some paths keeps the other paths of the same key (each is stamped)
    runs[key] = {
        **stamp, "machine": machine(),
        "world": {"name": args.world, "data_dir": str(folder), **meta, "users": len(users),
                  "cached_users": len(cached_users), "as_of": as_of.isoformat() if as_of else None},
        "workers": workers, "rank_depth": rank_depth, "seconds_per_rate": args.seconds, "seed": args.seed,
        "servers": {**earlier.get("servers", {}), **servers}, "paths": {**earlier.get("paths", {}), **results},
    }
    extra = {"superseded": previous["superseded"]} if "superseded" in previous else (
        {"superseded": {"note": "the figures of the earlier method (users cycled over a subset, precomputed lists "
                        "deleted, no as_of: stale_features answers, 20 s at one rate); they do not reproduce "
                        "with random users over all of them", "worlds": previous["worlds"]}}
        if "worlds" in previous else {})
    record("serving_latency", {
        "hosting": "python -m bento_services serve (make serve's command: bentoml serve "
                   "bento_services.service:Recsys), `workers` worker processes, per-key rate limit raised",
        "load": "open loop (bench/loadgen.py): constant rate, latency from each request's scheduled send time, "
                "users drawn uniformly at random (seeded) over all users of the world; every body parsed for "
                "degradation and cached",
        "replay": "the small world (ml-latest-small, ends 2018) is served with serving.allow_as_of=true and every "
                  "GET sends as_of=<the data's end> (parse_as_of('data-end')); answered 'now', every stored "
                  "feature is past its TTL and the full path keeps candidate order (stale_features)",
        "full_path": "serving.precomputed_reads=false: every request takes the full path",
        "runs": runs, **extra,
    }, path=args.out)
    table = markdown(runs)
    args.out.with_suffix(".md").write_text(table)
    plot(runs, args.out.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
