"""Overload of the hosted API: the cached path offered `--factor` (2) times its capacity over several API keys.

The API runs as `make serve` runs it (`python -m bento_services serve`: `bentoml serve` of
bento_services.service:Recsys, our hosting configuration, the default admission control and budgets) over a
private copy of the small world of `bench.serving_latency` (ml-latest-small, every user's list precomputed),
with the per-key rate limit at `--key-rate` so that each key's share of the load stays under its own limit:
what is refused is refused by admission control, not by the rate limit.

Three phases, back to back, open loop (each request sent at its due time whatever the server does; latency
from the due time), users drawn at random (seeded), keys in turn:
  before    `--probe-rate` for `--probe-seconds`: the normal latency
  overload  `--factor` x capacity for `--seconds`; capacity is `--capacity`, else measured first by a closed
            loop of 8 connections on the same requests
  after     `--probe-rate` again for `--after-seconds`, starting the moment the overload's sending stops:
            the recovery time is when the probes are back to normal (every later one 200 and under
            `max(5 ms, 3 x the before phase's p99)`)
Reported per phase: goodput (200s within `serving.request_budget_ms` per second), the share of 503s and of
other failures, p50/p99 of the 200s and of the 503s, the rungs served (the body's `degradation`, cached or not); and
the deltas of the API's admission, busy-answer, degradation and stage-failure counters in `/metrics`.
The generator is Python on the same two cores as the server: on this machine it is part of the load.

    .venv/bin/python -m bench.overload [--seconds 20] [--capacity 450] [--factor 2]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import CACHE, record
from bench.loadgen import Connection, _request_bytes, percentiles, served
from bench.serving_latency import recommendation_label, small_world, users_of
from recsys.settings import Settings

PORT = 38131
BASE = f"http://127.0.0.1:{PORT}"
FOLDER = CACHE / "overload"
COUNTERS = ("recsys_admissions_total", "recsys_busy_answers_total", "recsys_degradations_total",
            "recsys_stage_failures_total", "recsys_cache_lookups_total")


@dataclass
class Answer:
    phase: str
    due: float  # seconds since the load started
    status: int  # 0: no answer (connection error)
    latency_ms: float
    rung: str  # the body's degradation, with "+cached" for the cached path; "" when not a 200


class Load:
    """Keep-alive connections to the API, opened as needed; each request on an idle one."""

    def __init__(self, requests: list[bytes]) -> None:
        self.requests = requests
        self.idle: list[Connection] = []
        self.answers: list[Answer] = []

    async def one(self, phase: str, due: float, origin: float, request: bytes) -> None:
        connection = self.idle.pop() if self.idle else Connection(*await asyncio.open_connection("127.0.0.1", PORT))
        try:
            status, body = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            connection.writer.close()
            self.answers.append(Answer(phase, due, 0, (time.perf_counter() - origin - due) * 1e3, ""))
            return
        rung = recommendation_label(status, body).replace("/cached", "+cached") if status == 200 else ""
        self.answers.append(Answer(phase, due, status, (time.perf_counter() - origin - due) * 1e3, rung))
        self.idle.append(connection)

    async def open_loop(self, phases: list[tuple[str, float, float]]) -> float:
        """Send the phases (name, rate, seconds) back to back; the second the overload's sending stopped."""
        origin = time.perf_counter() + 0.05
        tasks, start, cursor, overload_end = [], 0.0, 0, 0.0
        for name, rate, seconds in phases:
            for k in range(int(rate * seconds)):
                due = start + k / rate
                delay = origin + due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                request = self.requests[cursor % len(self.requests)]
                cursor += 1
                tasks.append(asyncio.ensure_future(self.one(name, due, origin, request)))
            start += seconds
            if name == "overload":
                overload_end = start
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        for connection in self.idle:
            connection.writer.close()
        return overload_end

    async def closed_loop(self, concurrency: int, seconds: float) -> float:
        """Requests per second of `concurrency` connections each sending the next on the previous answer."""
        stop = time.perf_counter() + seconds
        done = 0

        async def worker(offset: int) -> None:
            nonlocal done
            connection = Connection(*await asyncio.open_connection("127.0.0.1", PORT))
            k = offset
            while time.perf_counter() < stop:
                status, _ = await connection.exchange(self.requests[k % len(self.requests)])
                done += status == 200
                k += concurrency
            connection.writer.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return done / (time.perf_counter() - started)


def _run(coroutine: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def summary(answers: list[Answer], seconds: float, budget_ms: float) -> dict[str, Any]:
    ok = [a.latency_ms for a in answers if a.status == 200]
    refused = [a.latency_ms for a in answers if a.status == 503]
    statuses = Counter(str(a.status) for a in answers)
    total = max(1, len(answers))
    return {
        "requests": len(answers), "statuses": dict(sorted(statuses.items())),
        "goodput_rps": round(sum(1 for v in ok if v <= budget_ms) / seconds, 1),
        "ok_rps": round(len(ok) / seconds, 1),
        "share_503": round(len(refused) / total, 4),
        "share_other_failures": round((len(answers) - len(ok) - len(refused)) / total, 4),
        "ok": percentiles(ok) if ok else None, "refused": percentiles(refused) if refused else None,
        "rungs": dict(Counter(a.rung for a in answers if a.status == 200).most_common()),
    }


def recovery_s(after: list[Answer], overload_end: float, normal_ms: float) -> float | None:
    """Seconds from the end of the overload's sending to the first probe from which every probe is normal."""
    probes = sorted(after, key=lambda a: a.due)
    recovered: float | None = None
    for answer in probes:
        if answer.status != 200 or answer.latency_ms > normal_ms:
            recovered = None
        elif recovered is None:
            recovered = answer.due
    return None if recovered is None else round(max(0.0, recovered - overload_end), 3)


def counters() -> dict[str, float]:
    """The API's counters of COUNTERS, one entry per labelled series."""
    import urllib.request

    with urllib.request.urlopen(f"{BASE}/metrics", timeout=30) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(COUNTERS):
            series, value = line.rsplit(" ", 1)
            found[series] = float(value)
    return found


def deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    changed = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    return {re.sub(r"_total\{", "{", k): round(v) for k, v in sorted(changed.items())}


def world() -> Path:
    """A private copy of the small world (its serving log lands in the copy, not in the shared world)."""
    source = small_world()
    run = FOLDER / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(source, run)
    return run


def serve(folder: Path, keys: list[str], key_rate: float) -> Any:
    import json

    env = {"RECSYS_DATA_DIR": str(folder), "RECSYS_PROFILE": "local", "BENTOML_DO_NOT_TRACK": "true",
           "RECSYS_SERVING__PORT": str(PORT), "RECSYS_SERVING__API_KEYS": json.dumps(keys),
           "RECSYS_SERVING__RATE_LIMIT_PER_SECOND": str(key_rate),
           "RECSYS_SERVING__RATE_LIMIT_BURST": str(int(2 * key_rate))}
    if (folder / "feature_repo").exists():
        env["RECSYS_FEATURES__REPO_PATH"] = str(folder / "feature_repo")
    command = [sys.executable, "-m", "bento_services", "serve"]
    return served(command, f"{BASE}/healthz", FOLDER / "serve.log", env=env, timeout_s=900)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="overload phase")
    parser.add_argument("--capacity", type=float, default=None, help="cached path's requests/s (default: measured)")
    parser.add_argument("--capacity-seconds", type=float, default=5)
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--probe-rate", type=float, default=50)
    parser.add_argument("--probe-seconds", type=float, default=3)
    parser.add_argument("--after-seconds", type=float, default=5)
    parser.add_argument("--key-rate", type=float, default=1000, help="per-key rate limit of the served API")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--note", default="", help="recorded with the figures (e.g. a short development run)")
    args = parser.parse_args()
    serving = Settings.load().serving
    folder = world()
    rng = random.Random(args.seed)
    users = users_of(folder)
    # Keys: enough that each one's share of the overload stays under 3/4 of its own rate limit.
    planned = (args.capacity or 600.0) * args.factor
    keys = [f"bench-key-{k}" for k in range(max(3, math.ceil(planned / (0.75 * args.key_rate))))]
    requests = [_request_bytes(f"{BASE}/recommendations?user_id={rng.choice(users)}&n=50", "GET", None,
                               {"X-API-Key": keys[k % len(keys)]})[2] for k in range(20_000)]
    phases = [("before", args.probe_rate, args.probe_seconds), ("overload", 0.0, args.seconds),
              ("after", args.probe_rate, args.after_seconds)]
    with serve(folder, keys, args.key_rate):
        _run(Load(requests).open_loop([("warmup", args.probe_rate, 2)]))
        capacity = args.capacity or _run(Load(requests).closed_loop(8, args.capacity_seconds))
        phases[1] = ("overload", args.factor * capacity, args.seconds)
        before = counters()
        load = Load(requests)
        overload_end = _run(load.open_loop(phases))
        moved = deltas(before, counters())
    figures = {name: summary([a for a in load.answers if a.phase == name], seconds, serving.request_budget_ms)
               for name, _, seconds in phases}
    normal_ms = max(5.0, 3 * figures["before"]["ok"]["p99_ms"]) if figures["before"]["ok"] else 5.0
    figures["after"]["recovery_s"] = recovery_s([a for a in load.answers if a.phase == "after"], overload_end,
                                                normal_ms)
    figures["after"]["normal_ms"] = round(normal_ms, 3)
    record("overload", {
        "hosting": "python -m bento_services serve (make serve), local profile, 1 worker, the small world of "
                   "bench.serving_latency (every user's list precomputed)",
        "load": f"open loop over {len(keys)} API keys (rate limit {args.key_rate:.0f}/s each), users at random",
        "settings": {k: getattr(serving, k) for k in (
            "admission_limit", "admission_queue", "admission_queue_ms", "request_budget_ms", "cheap_after_share")},
        "capacity_rps": round(capacity, 1), "capacity_measured": args.capacity is None,
        "offered_rps": round(args.factor * capacity, 1), "phases": figures, "metrics": moved, "note": args.note,
    })


if __name__ == "__main__":
    main()
