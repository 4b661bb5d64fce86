"""BentoML's own overhead: one trivial route (50 items as JSON) on plain uvicorn and hosted in BentoML, side by side.

Variants, all serving `bench.trivial_app.app` on 127.0.0.1:
  plain        uvicorn + Starlette, no BentoML
  default      `bentoml serve`, `@bentoml.asgi_app`, BentoML's default configuration
  quiet        as default, access logging and BentoML's metrics off (the issue's second measurement)
  fix_only     quiet + the timeout-middleware fix of `bento_services.hosting`
  hosted       the way `make serve` hosts the API: `bento_services.hosting` configuration, fix, frozen heap
and, with `--api`, the real API's trivial route (GET /healthz of `bento_services.api.http`, over the data directory's
pipeline) hosted both ways:
  api_plain    `recsys serve` (uvicorn running the FastAPI app directly)
  api_hosted   `python -m bento_services serve` (what `make serve` runs)

Rounds interleave the variants so that the neighbours' load on the two shared cores hits them alike; the
record keeps every run and the medians over rounds, and the ratio of each variant's median to plain's.
Each run also reads the worker's collector statistics (`bench.gc_probe`): collections per generation, their
time, and the objects left behind per request.

    .venv/bin/python -m bench.bentoml_overhead [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import CACHE, record
from bench.loadgen import closed_loop, served

BASE_PORT = 38110
VARIANTS: dict[str, list[str]] = {
    "plain": ["uvicorn", "bench.trivial_app:app", "--log-level", "warning"],
    "default": ["bentoml", "serve", "bench.trivial_app:TrivialDefault"],
    "quiet": ["bentoml", "serve", "bench.trivial_app:TrivialQuiet"],
    "fix_only": ["bentoml", "serve", "bench.trivial_hosted:TrivialFixOnly"],
    "hosted": ["bentoml", "serve", "bench.trivial_hosted:TrivialHosted"],
}
API_VARIANTS = ("api_plain", "api_hosted")


def _route(variant: str) -> str:
    return "/healthz" if variant in API_VARIANTS else "/items"


def _command(variant: str, port: int) -> tuple[list[str], dict[str, str]]:
    env = {"BENTOML_HOME": str(CACHE / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true"}
    if variant == "api_plain":
        return [str(Path(sys.executable).parent / "recsys"), "serve"], {**env, "RECSYS_SERVING__PORT": str(port)}
    if variant == "api_hosted":
        return [sys.executable, "-m", "bento_services", "serve"], {**env, "RECSYS_SERVING__PORT": str(port)}
    program, *args = VARIANTS[variant]
    return [str(Path(sys.executable).parent / program), *args, "--host", "127.0.0.1", "--port", str(port)], env


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return dict(json.load(response))


def _run(base: str, variant: str, concurrency: int, seconds: float) -> dict[str, Any]:
    if variant in API_VARIANTS:  # no probe routes in the real API
        run = closed_loop(f"{base}/healthz", concurrency, seconds)
        run.update(gc={"gen2": {"collections": None}}, objects_left_per_request=None)
        return run
    _get(f"{base}/_probe/gc?reset=1")
    _get(f"{base}/_probe/types?mark=1")
    figures = closed_loop(f"{base}/items", concurrency, seconds)
    collector = _get(f"{base}/_probe/gc")
    growth = _get(f"{base}/_probe/types")
    gens = collector["generations"]
    figures["gc"] = {f"gen{g}": {"collections": int(row["count"]), "total_ms": round(row["total_ms"], 1),
                                 "max_ms": round(row["max_ms"], 1)} for g, row in gens.items()}
    figures["objects_left_per_request"] = round(sum(growth["grew"].values()) / max(figures["requests"], 1), 2)
    figures["top_growth"] = dict(list(growth["grew"].items())[:8])
    return figures


def _summary(runs: list[dict[str, Any]], plain: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    medians = {k: round(statistics.median(run[k] for run in runs), 3) for k in keys}
    probed = [run for run in runs if run["objects_left_per_request"] is not None]
    medians["gen2_collections"] = sum(run["gc"]["gen2"]["collections"] for run in probed) if probed else None
    medians["objects_left_per_request"] = (statistics.median(run["objects_left_per_request"] for run in probed)
                                           if probed else None)
    if plain:
        medians["ratio_to_plain"] = {k: round(medians[k] / plain[k], 2) for k in keys if plain[k]}
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--api", action="store_true", help="also the real API's /healthz, plain and hosted")
    args = parser.parse_args()
    if args.api:
        args.variants += list(API_VARIANTS)
    bases = {v: f"http://127.0.0.1:{BASE_PORT + i}" for i, v in enumerate(args.variants)}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {v: {c: [] for c in args.concurrency} for v in args.variants}
    with contextlib.ExitStack() as stack:
        for i, variant in enumerate(args.variants):
            command, env = _command(variant, BASE_PORT + i)
            stack.enter_context(served(command, f"{bases[variant]}{_route(variant)}",
                                       CACHE / "logs" / f"overhead-{variant}.log", env=env, timeout_s=300))
        for variant in args.variants:  # warm-up
            closed_loop(f"{bases[variant]}{_route(variant)}", 1, 1)
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                for variant in args.variants:
                    run = _run(bases[variant], variant, concurrency, args.seconds)
                    runs[variant][concurrency].append(run)
                    print(f"round {round_ + 1} c={concurrency} {variant:10s} {run['rps']:8.0f} req/s  "
                          f"p50 {run['p50_ms']:7.3f}  p99 {run['p99_ms']:8.3f} ms  "
                          f"gen2 {run['gc']['gen2']['collections']}", flush=True)
    summary: dict[str, Any] = {}
    for concurrency in args.concurrency:
        plain = _summary(runs["plain"][concurrency], None) if "plain" in runs else None
        api_plain = _summary(runs["api_plain"][concurrency], None) if "api_plain" in runs else None
        summary[f"c{concurrency}"] = {v: _summary(runs[v][concurrency], api_plain if v in API_VARIANTS else plain)
                                      for v in args.variants}
    record("bentoml_overhead", {
        "route": "GET /items, 50 items as JSON (bench/trivial_app.py); api_*: GET /healthz of the real API",
        "ratio_to_plain": "each variant's median over plain's (api_hosted over api_plain)",
        "load": f"wrk -t1 -cN -d{args.seconds}s on loopback, {args.rounds} interleaved rounds; medians over rounds",
        "variants": {v: " ".join(_command(v, 0)[0][-6:]) for v in args.variants},
        "summary": summary,
        "runs": {v: {f"c{c}": rs for c, rs in by_c.items()} for v, by_c in runs.items()},
    })


if __name__ == "__main__":
    main()
