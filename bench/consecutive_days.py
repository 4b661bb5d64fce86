"""Three consecutive simulated days of the daily pipeline (`workflow.daily.run_pipeline`) on a synthetic world.

Day 1 imports every day but the last and publishes the first version. Day 2 imports the last day's events and
publishes, through the gate against the version in service, a canary to `pipeline.canary_share` percent of users;
requests served in process through the real serving pipeline (which follows the release record) fill the serving
log, and `recsys release check` on it promotes the canary 5 -> 50 -> 100 until it is stable. Day 3 runs on the same
lake (the Spark step is skipped) with a broken candidates step, its index built on shuffled item vectors: the gate
rejects it and serving is left as it was.

    .venv/bin/python -m bench.consecutive_days [--interactions 30000] [--users 300] [--items 200] [--days 12]

writes bench/results/consecutive_days.json: per day the outcome and reasons, each step's status, seconds and peak
memory from its manifest, and the gate's metrics (new, serving, popularity); the promotions between days 2 and 3.
`tests/workflow/test_consecutive_days.py` runs the same days on a smaller world.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import record
from ingestion.synthetic import SyntheticConfig, generate
from recsys.release import read_release
from recsys.settings import Settings
from workflow.daily import RunOutcome, run_pipeline
from workflow.runner import RunContext, Step, StepResult


@dataclass(frozen=True)
class World:
    """A synthetic world in the generic import format, cut in two: `first` holds every day but the last (items and
    users with it), `last` the last day's events alone."""

    first: Path
    last: Path
    last_day: pd.Timestamp


def make_world(config: SyntheticConfig, folder: Path) -> World:
    """Generate `config` under `folder` and cut it before its last day. The generator is asked for one day more
    (and as many more events), which is dropped: it stops at its event count part-way through its last day, and
    places ratings an hour after their purchase, so the days kept are whole."""
    raw = folder / "raw"
    more = replace(config, days=config.days + 1, interactions=config.interactions * (config.days + 1) // config.days)
    generate(more, raw, show_progress=False)
    events = pd.concat([pd.read_parquet(p) for p in sorted((raw / "interactions").glob("*.parquet"))],
                       ignore_index=True)
    last_day = config.start + pd.Timedelta(days=config.days - 1)
    events = events[events["timestamp"] < last_day + pd.Timedelta(days=1)]
    first, last = folder / "first", folder / "last"
    for target, part in ((first, events[events["timestamp"] < last_day]),
                         (last, events[events["timestamp"] >= last_day])):
        (target / "interactions").mkdir(parents=True)
        part.to_parquet(target / "interactions" / "part-00000.parquet", index=False)
    for name in ("items.parquet", "users.parquet"):
        shutil.copy(raw / name, first / name)
    return World(first, last, last_day)


def rehearsal_settings(settings: Settings, **pipeline: Any) -> Settings:
    """`settings` for a rehearsal: passing versions go to a 5% canary, the guardrails judge after 20 answers per
    version, no drift report; `pipeline` overrides more `[pipeline]` keys (a smaller training for tests)."""
    update = {"canary_share": 5, "guardrail_min_requests": 20, "drift": False} | pipeline
    return settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update=update)})


def shuffled_candidates(context: RunContext) -> StepResult:
    """The real candidates step, then its index rebuilt with the same vectors dealt to other items: a model that
    trained and saved normally but whose item embeddings are scrambled (what the gate must catch)."""
    from bento_services.pipeline.retrieve import _vectors
    from recsys.models.item_index import ItemIndex
    from workflow.steps import candidates_step

    result = candidates_step(context)
    path = Path(result.outputs["folder"]) / "item_index"
    index = ItemIndex.load(path)
    vectors = _vectors(index)[np.random.default_rng(1).permutation(len(index.item_ids))]
    ItemIndex.build(vectors, list(index.item_ids), model_version=index.meta.model_version, version=index.meta.version,
                    data_start=datetime.fromisoformat(index.meta.data_start),
                    data_end=datetime.fromisoformat(index.meta.data_end)).save(path)
    result.note = "item vectors shuffled after training (a deliberately broken model)"
    return result


def broken_steps() -> list[Step]:
    """The daily pipeline's steps with `shuffled_candidates` in place of the candidates step."""
    from workflow.steps import STEPS

    return [Step(s.name, shuffled_candidates, s.optional) if s.name == "candidates" else s for s in STEPS]


def serve(settings: Settings, users: list[str], rounds: int) -> dict[str, int]:
    """`rounds` requests per user through a serving pipeline that follows the release record (stable and canary
    loaded side by side), each answer written to the serving log; answers per candidate version."""
    from bento_services.pipeline.batch import batch_settings
    from bento_services.pipeline.contracts import RecommendationRequest
    from bento_services.pipeline.pipeline import build_pipeline
    from bento_services.pipeline.rankers import load_rankers
    from bento_services.serving_log import to_record
    from recsys import serving_log

    serving = batch_settings(settings)  # a busy machine never degrades an answer for want of time
    ranker, _ = load_rankers(serving)
    pipeline = build_pipeline(serving, ranker=ranker)  # its watcher loads what the release record names
    try:
        release = read_release(settings.data_path)
        wanted = set() if release is None else {release.stable, *([release.canary] if release.canary else [])}
        deadline = time.monotonic() + 120
        while not wanted <= {d.version for d in pipeline.rollout.deployments()}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"serving did not load {wanted} within 120 s")
            time.sleep(0.05)
        answers = [pipeline.recommend(RecommendationRequest(user, n=20)) for _ in range(rounds) for user in users]
    finally:
        pipeline.close()
    serving_log.write(settings.lake_path, [to_record(answer) for answer in answers])
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer.candidates_version] = counts.get(answer.candidates_version, 0) + 1
    return counts


def roll_out(settings: Settings, users: list[str], rounds: int = 3, checks: int = 6,
             progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Serve, then `recsys release check`, until the canary is stable or `checks` checks were made (each share needs
    its own answers: guardrails look only after the canary's last change). One entry per check."""
    from workflow.release import check

    steps = []
    for _ in range(checks):
        release = read_release(settings.data_path)
        if release is None or release.canary is None:
            break
        share = release.share
        served = serve(settings, users, rounds)
        action, verdict, after = check(settings, progress=progress)
        steps.append({"share": share, "action": action, "answers": served,
                      "breaches": verdict.breaches if verdict else [],
                      "stable": vars(verdict.stable) if verdict else None,
                      "canary": vars(verdict.canary) if verdict else None,
                      "share_after": after.share if after and after.canary else 100 if after else None})
        progress(f"[rollout] at {share}%: {action}")
    return steps


def summary(outcome: RunOutcome) -> dict[str, Any]:
    """What a day's run recorded: outcome, reasons, each step's status, seconds and peak memory, the gate's
    metrics (new version, serving version, popularity) and checks."""
    manifest = json.loads(outcome.manifest.read_text())
    steps = {name: {"status": step["status"], "seconds": step.get("seconds"), "peak_rss_mb": step.get("peak_rss_mb"),
                    "children_peak_rss_mb": step.get("children_peak_rss_mb"), "note": step.get("note")}
             for name, step in manifest["steps"].items()}
    evaluation_file = outcome.manifest.parent / "evaluation.json"
    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else None
    gate = manifest["steps"].get("gate", {}).get("metrics") or {}
    return {"run_id": outcome.run_id, "outcome": outcome.state, "reasons": outcome.reasons,
            "seconds": round(sum(s["seconds"] or 0 for s in steps.values()), 1), "steps": steps,
            "evaluation": evaluation, "gate_checks": gate,
            "versions": {name: step["versions"] for name, step in manifest["steps"].items() if step.get("versions")}}


def rehearse(settings: Settings, world: World, users: list[str], progress: Callable[[str], None] = print
             ) -> dict[str, Any]:
    """The three days in order on `settings`' data folder; the figures `main` records."""
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    day1 = run_pipeline(settings, import_dir=world.first, progress=progress)
    figures["day1"] = summary(day1)
    day2 = run_pipeline(settings, import_dir=world.last, progress=progress)
    figures["day2"] = summary(day2)
    figures["rollout"] = roll_out(settings, users, progress=progress) if day2.state == "published" else []
    release = read_release(settings.data_path)
    figures["release_after_day2"] = release.as_dict() if release else None
    day3 = run_pipeline(settings, steps=broken_steps(), progress=progress)
    figures["day3"] = summary(day3)
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--keep", action="store_true", help="keep the data folder (printed) for inspection")
    args = parser.parse_args()
    config = SyntheticConfig(users=args.users, items=args.items, interactions=args.interactions, days=args.days)
    folder = Path(tempfile.mkdtemp(prefix="recsys-consecutive-days-"))
    try:
        from tests.conftest import make_settings, own_feature_repo

        os.environ["BENTOML_HOME"] = str(folder / "bentoml")  # the rehearsal's own model store, not ~/bentoml
        settings = rehearsal_settings(own_feature_repo(make_settings("local", folder), folder))
        world = make_world(config, folder / "world")
        users = sorted(pd.read_parquet(world.first / "users.parquet")["user_id"].astype(str))
        figures = rehearse(settings, world, users)
        record("consecutive_days", {"world": {k: getattr(config, k) for k in
                                              ("users", "items", "interactions", "days", "seed")},
                                    "pipeline": settings.pipeline.model_dump(), **figures})
    finally:
        if args.keep:
            print(f"data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
