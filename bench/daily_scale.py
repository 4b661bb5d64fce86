"""The daily pipeline at scale (issue 12's 10M figures): time and peak memory of every step of an incremental day.

    .venv/bin/python -m bench.daily_scale [--interactions 10000000] [--users 200000] [--items 50000] [--days 90]
                                          [--bootstrap-steps 1000] [--folder var/bench/daily-10000000]

Generates the synthetic world (the generator's defaults scaled: 200k users, 50k items, 90 days) cut before its last
day, then runs `workflow.daily.run_pipeline` twice on one data folder, with the settings a user gets (`local`
profile) apart from the first run's training:

- day 1 imports every day but the last and publishes the first version. It has nothing to warm-start from, and a
  from-scratch epoch at 10M takes about 25 minutes per two-tower model (two: the candidates' and the ranker
  window's), so it is bootstrapped with `pipeline.max_steps` (--bootstrap-steps batches each). A first version is
  built once; its figures are recorded, not judged;
- day 2 imports the last day and runs the daily pipeline as every later day would: Spark on the changed day, both
  two-tower models warm-started from the serving version, the ranker, the gate, publication, precompute, drift.
  This is the run the 45-minute target is about.

Each day's manifest gives seconds and peak memory per step (`summary`); results go to
bench/results/daily_scale.json after each day. The folder is kept: with day 1 done, a rerun goes straight to day 2
(`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, record
from bench.consecutive_days import make_world, summary
from ingestion.synthetic import SyntheticConfig
from recsys.release import read_release
from recsys.settings import Settings
from workflow.daily import run_pipeline

RESULT = RESULTS / "daily_scale.json"


def local_settings(folder: Path) -> Settings:
    """The `local` profile's defaults on `folder`, with its own copy of the feature repository and Feast project
    (the same on a rerun)."""
    from tests.conftest import ROOT_DIR, make_settings

    repo = folder / "feature_repo"
    if not repo.is_dir():
        shutil.copytree(ROOT_DIR / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    settings = make_settings("local", folder)
    features = settings.features.model_copy(update={"repo_path": repo, "project": "daily_scale"})
    return settings.model_copy(update={"features": features})


def with_pipeline(settings: Settings, **pipeline: Any) -> Settings:
    return settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update=pipeline)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--bootstrap-steps", type=int, default=1000,
                        help="batches of each from-scratch two-tower training on day 1")
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="delete the folder first")
    parser.add_argument("--resume", metavar="RUN_ID", help="resume this day-1 run from its failed step")
    args = parser.parse_args()
    config = SyntheticConfig(users=args.users, items=args.items, interactions=args.interactions, days=args.days)
    folder = (args.folder or Path("var/bench") / f"daily-{args.interactions}").resolve()
    if args.fresh:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    world_folder = folder / "world"
    figures: dict[str, Any] = {"world": {k: getattr(config, k) for k in ("users", "items", "interactions", "days",
                                                                        "seed")},
                               "bootstrap_steps": args.bootstrap_steps}
    if not (world_folder / "last").is_dir():
        started = time.perf_counter()
        shutil.rmtree(world_folder, ignore_errors=True)
        make_world(config, world_folder)
        figures["world_seconds"] = round(time.perf_counter() - started, 1)
    first, last = world_folder / "first", world_folder / "last"
    settings = local_settings(folder)
    # The run's own model store, not ~/bentoml; set after `local_settings`, whose import of the tests' conftest
    # points BENTOML_HOME at a temporary store (the runs of 2026-12-02 published their rankers there).
    os.environ["BENTOML_HOME"] = str(folder / "bentoml")
    bootstrap = with_pipeline(settings, max_steps=args.bootstrap_steps)
    if args.resume:  # a day-1 run that failed at a step (e.g. killed): on from there
        figures["day1"] = summary(run_pipeline(bootstrap, resume=args.resume, progress=print))
        record("daily_scale", figures)
    elif read_release(settings.data_path) is None:
        figures["day1"] = summary(run_pipeline(bootstrap, import_dir=first, progress=print))
        record("daily_scale", figures)
    elif RESULT.is_file():  # day 1 done by an earlier invocation: keep its figures
        earlier = json.loads(RESULT.read_text())
        figures |= {k: earlier[k] for k in ("world_seconds", "day1") if k in earlier}
    if read_release(settings.data_path) is None:
        raise SystemExit("day 1 published nothing: no day 2 (see its manifest; --resume RUN_ID continues it)")
    day2 = run_pipeline(settings, import_dir=last, progress=print)
    figures["day2"] = summary(day2)
    figures["pipeline"] = settings.pipeline.model_dump()
    record("daily_scale", figures)


if __name__ == "__main__":
    main()
