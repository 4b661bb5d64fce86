"""The steps of the daily pipeline, each reusing what the `recsys` command of that step calls.

What each step hands on is in its manifest outputs (`RunContext.output`), so a resumed run, in a new process,
starts from the failed step with what the earlier ones produced.

Honest limits, also written into the manifest's notes: the Spark feature job rebuilds every day's snapshots (it
has no per-day mode), so the step is skipped only when no lake file changed since the last build for the same
`as_of`. The two-tower model is warm-started from the version in service (`embeddings.warm_start`: rows of the ids
both vocabularies know and the dense layers copied) and trained `pipeline.warm_epochs` on the events that version
has not seen plus a `pipeline.replay_share` sample of those it has; the first run, `--full`, or a serving version
it cannot start from (no saved weights, another width, or trained on the held-out day) trains `pipeline.epochs`
from scratch, and the step's note says which.

Experiment tracking (`training.tracking`, MLflow): the candidates and ranker steps each record their run and
register its version (the run id and version number in their outputs, `mlflow_run_id`, `mlflow_version`); the
gate adds the held-out day's metrics (`heldout/new|serving|popularity/...`) and its verdict (tags `gate`
passed|rejected, `gate_reasons`) to both runs; the release (`workflow.release`) tags them with their state. A
tracking store that fails is reported and never fails a step.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recsys.backends import open_catalog, open_interactions, open_lake
from recsys.errors import InvalidInputError
from recsys.settings import Settings
from workflow.runner import Rejected, RunContext, Step, StepResult

if TYPE_CHECKING:
    from training.tracking import RunRecord

RUN_STORE = "bentoml"  # the run's own BentoML home: its ranker waits there until publication
HISTORY_MODEL = "ranker_history"  # in models/<version>/: the two-tower model of the ranker's window lists


def lake_step(context: RunContext) -> StepResult:
    """New events into the lake (`--import DIR`, the generic format), then the run's `as_of` and held-out day."""
    settings, options = context.settings, context.manifest.options
    inputs: dict[str, Any] = {}
    if options.get("import_dir"):
        from ingestion.generic import GenericSource
        from ingestion.importer import Importer

        with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
            catalog.migrate()
            interactions.migrate()
            source = GenericSource(Path(options["import_dir"]))
            report = Importer(catalog, interactions, open_lake(settings)).run(source)
        inputs = {"import_dir": options["import_dir"], "events_read": report.events_read,
                  "events_new_in_lake": report.events_new_in_lake}
    lake = open_lake(settings)
    events = lake.interactions(columns=["event_time"]).to_pandas()
    if events.empty:
        raise InvalidInputError(f"the lake at {lake.root} holds no interactions; import data first")
    newest = pd.Timestamp(events["event_time"].max())
    as_of = (pd.Timestamp(options["as_of"]) if options.get("as_of")
             else newest.floor("s") + pd.Timedelta(seconds=1)).to_pydatetime()
    from workflow.evaluate import held_out_day

    start, _ = held_out_day(settings.lake_path, as_of)
    return StepResult(
        inputs=inputs,
        outputs={"as_of": as_of.isoformat(), "held_out_day": start.isoformat(), "newest_event": newest.isoformat(),
                 "lake_fingerprint": lake_fingerprint(settings.lake_path), "events": len(events)},
        note=f"as of {as_of:%Y-%m-%d %H:%M:%S}, held-out day {start:%Y-%m-%d}")


def features_step(context: RunContext) -> StepResult:
    """Spark: lake + catalog -> the point-in-time feature tables (`recsys build-features`)."""
    from ingestion.features.engineering import FeatureJobConfig, run_feature_job

    settings, as_of = context.settings, context.as_of
    fingerprint = context.output("lake", "lake_fingerprint")
    marker = settings.data_path / "pipeline" / "features.json"
    built = json.loads(marker.read_text()) if marker.is_file() else {}
    wanted = {"lake_fingerprint": fingerprint, "as_of": as_of.isoformat(), "output": str(settings.feature_data_path)}
    if not context.manifest.options.get("full") and built == wanted and settings.feature_data_path.is_dir():
        return StepResult(outputs=wanted, skipped=True,
                          note="no lake file changed since the last build for this as_of")
    config = FeatureJobConfig(lake=settings.lake_path, output=settings.feature_data_path,
                              master=settings.features.spark_master,
                              cadence_days=settings.features.snapshot_cadence_days, as_of=as_of)
    written = run_feature_job(config, progress=lambda message: context.progress(f"  [spark] {message}"))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(wanted))
    return StepResult(outputs=wanted, metrics={f"{table}_rows": rows for table, rows in written.items()},
                      note="every day rebuilt: the Spark job has no per-day mode")


def feast_apply_step(context: RunContext) -> StepResult:
    from recsys.features.store import apply_repo

    apply_repo(context.settings)
    return StepResult(outputs={"project": context.settings.features.project})


def materialize_step(context: RunContext) -> StepResult:
    from ingestion.features.materialize import materialize
    from recsys.features.store import open_feature_store

    reports = materialize(open_feature_store(context.settings), end=context.as_of,
                          progress=lambda message: context.progress(f"  [materialize] {message}"))
    return StepResult(outputs={"end": context.as_of.isoformat()},
                      metrics={f"{r.view}_rows": r.rows for r in reports})


def _warm_folder(context: RunContext) -> Path | None:
    """The serving version's `models/<version>` folder, which training warm-starts from (None: `--full`, or
    nothing in service)."""
    from workflow.release import stable_version

    serving = None if context.manifest.options.get("full") else stable_version(context.settings)
    return context.settings.data_path / "models" / serving.candidates if serving is not None else None


def candidates_step(context: RunContext) -> StepResult:
    """Two-tower training on the events before the held-out day, index, neighbours, user vectors: a new
    `models/<version>` folder, not published."""
    from embeddings.artifacts import build_candidate_artifacts
    from embeddings.train import TrainConfig
    from training.tracking import candidate_record

    settings, config, full = context.settings, context.settings.pipeline, context.manifest.options.get("full")
    until = datetime.fromisoformat(context.output("lake", "held_out_day"))
    version = f"two-tower-{context.manifest.run_id}"
    warm = _warm_folder(context)
    train = TrainConfig(epochs=config.epochs, until=until, warm_start=warm, warm_epochs=config.warm_epochs,
                        replay_share=config.replay_share, warm_learning_rate=config.warm_learning_rate,
                        max_steps=config.max_steps)
    built = build_candidate_artifacts(settings, train,
                                      progress=lambda message: context.progress(f"  [candidates] {message}"),
                                      version=version, publish=False)
    tracked = _track(context, "candidates", candidate_record(built, train))
    return StepResult(inputs={"until": until.isoformat(), "warm_start": str(warm) if warm else None,
                              "epochs": built.start.epochs, "replay_share": config.replay_share if warm else None},
                      outputs={"version": built.version, "folder": str(built.folder),
                               "warm_from": built.start.warm_from, **tracked},
                      versions={"candidates": built.version}, metrics={"items": built.items, "users": built.users},
                      note=built.start.note if warm else f"from scratch ({'--full' if full else 'nothing in service'})")


def ranker_step(context: RunContext) -> StepResult:
    """The Wide & Deep ranker on the events before the held-out day (`training.ranker_eval`): trained on lists of a
    two-tower model that has not seen each user's latest events (warm-started from the serving version's, saved in
    the new version's folder for tomorrow), measured on that day re-ranking the new version's candidates, saved in
    the run's own model store until publication."""
    from embeddings.train import TrainConfig, save
    from monitoring.quality_offline import ArtifactCandidates
    from recsys.features.store import open_feature_store
    from training.ranker_eval import RankedCandidates, RankerEvalConfig, RankerRun, ranker_record
    from training.ranker_train import RankerTrainConfig, plot_curves, save_ranker
    from workflow.evaluate import held_out_day

    settings = context.settings
    items = open_lake(settings).latest_snapshot("items")
    if items is None:
        raise InvalidInputError("no item catalog in the lake; import data first")
    start, frame = held_out_day(settings.lake_path, context.as_of)
    train = frame[frame["event_time"] < pd.Timestamp(start)].reset_index(drop=True)
    test = frame[frame["event_time"] >= pd.Timestamp(start)]
    config = settings.pipeline
    serving = _warm_folder(context)
    warm = serving / HISTORY_MODEL if serving is not None else None
    history_train = TrainConfig(epochs=config.ranker_candidate_epochs, warm_start=warm, warm_epochs=config.warm_epochs,
                                replay_share=config.replay_share, warm_learning_rate=config.warm_learning_rate,
                                max_steps=config.max_steps)
    ranked = RankedCandidates(items, open_feature_store(settings),
                              RankerEvalConfig(candidate_epochs=config.ranker_candidate_epochs,
                                               train=RankerTrainConfig(epochs=config.ranker_epochs,
                                                                       members=config.ranker_members),
                                               history_train=history_train, max_users=config.ranker_users),
                              progress=lambda message: context.progress(f"  [ranker] {message}"))
    folder = Path(context.output("candidates", "folder"))
    ranked.fit(train, source=ArtifactCandidates(settings, train, folder))
    metrics = ranked.holdout_metrics(test)
    assert ranked.trained is not None and ranked.data_window is not None and ranked.history_model is not None
    save(ranked.history_model, folder / HISTORY_MODEL)
    curve = context.run_dir / "ranker_curve.png"
    plot_curves(ranked.trained.history, curve)
    first, last = (t.to_pydatetime() for t in ranked.data_window)
    home = context.run_dir / RUN_STORE
    tag = save_ranker(ranked.trained, ranked.config.service, first, last, metrics, home)
    tracked = _track(context, "ranker", ranker_record(ranked, RankerRun(tag, metrics, curve)))
    return StepResult(inputs={"history_warm_start": str(warm) if warm else None},
                      outputs={"tag": tag, "home": str(home), **tracked}, versions={"ranker": tag.split(":", 1)[1]},
                      metrics={k: float(v) for k, v in metrics.items()}, note=ranked.history_model.start.note)


def evaluate_step(context: RunContext) -> StepResult:
    """The new version and the one in service on the held-out day, with popularity beside them."""
    from bento_services.pipeline.retrieve import current_folder
    from workflow.evaluate import day_holdout, held_out_day, measure, popularity

    settings, config = context.settings, context.settings.pipeline
    start, frame = held_out_day(settings.lake_path, context.as_of)
    held = day_holdout(frame, start, config.eval_users)
    before = frame[frame["event_time"] < pd.Timestamp(start)]
    folder = Path(context.output("candidates", "folder"))
    new_ranker = _run_ranker(context)
    result: dict[str, Any] = {"held_out_day": start.isoformat(), "users": len(held.relevant),
                              "new": {"version": folder.name, "ranker": context.output("ranker", "tag"),
                                      "metrics": measure(settings, folder, held, new_ranker, config.k)},
                              "popularity": popularity(before, held, config.k), "serving": None}
    serving_folder = current_folder(settings)
    if serving_folder is not None and serving_folder.is_dir():
        serving_ranker = _serving_ranker(settings)
        result["serving"] = {"version": serving_folder.name,
                             "ranker": f"ranker:{serving_ranker.version}" if serving_ranker is not None else None,
                             "metrics": measure(settings, serving_folder, held, serving_ranker, config.k)}
    (context.run_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    metrics = {f"new/{k}": v for k, v in result["new"]["metrics"].items()}
    metrics |= {f"popularity/{k}": v for k, v in result["popularity"].items()}
    if result["serving"] is not None:
        metrics |= {f"serving/{k}": v for k, v in result["serving"]["metrics"].items()}
    return StepResult(outputs={"evaluation": str(context.run_dir / "evaluation.json")}, metrics=metrics,
                      versions={"serving": result["serving"]["version"] if result["serving"] else "none"},
                      note=None if result["serving"] else "no version in service: compared with popularity only")


def gate_step(context: RunContext) -> StepResult:
    """`workflow.gate`: metrics against the serving version and popularity, the index answers, latency."""
    from workflow.evaluate import day_holdout, held_out_day
    from workflow.gate import index_answers, judge_latency, judge_metrics, latency_probe

    settings, config = context.settings, context.settings.pipeline
    evaluation = json.loads(Path(context.output("evaluate", "evaluation")).read_text())
    folder = Path(context.output("candidates", "folder"))
    serving = evaluation["serving"]["metrics"] if evaluation["serving"] else None
    reasons = judge_metrics(evaluation["new"]["metrics"], serving, evaluation["popularity"], config)
    start, frame = held_out_day(settings.lake_path, context.as_of)
    held = day_holdout(frame, start, config.eval_users)
    users = sorted(held.relevant)
    index_problem = index_answers(settings, folder, list(held.history[held.history["user_id"] == users[0]]["item_id"]))
    checks: dict[str, Any] = {"index": index_problem or "loads and answers"}
    if index_problem:
        reasons.append(index_problem)
    else:
        probe = latency_probe(settings, folder, _run_ranker(context), users, config.latency_requests)
        checks["latency"] = probe
        reasons += judge_latency(probe, config)
    result = StepResult(metrics=checks, outputs={"reasons": reasons})
    _annotate_runs(context, evaluation, checks.get("latency"), reasons)
    if reasons:
        raise Rejected(reasons, result)
    result.note = "passed: " + ", ".join(["metrics", "popularity", "index", "latency"])
    return result


def publish_step(context: RunContext) -> StepResult:
    """The ranker into the model store, then the release (`workflow.release.publish`): a canary to
    `pipeline.canary_share` percent of users beside the serving version, or with 0 the new stable version (its user
    vectors online, models/CURRENT, the release record)."""
    import bentoml

    from recsys.private.bentoml import model_store
    from recsys.release import Version
    from workflow.release import publish, stable_version

    settings = context.settings
    serving = stable_version(settings)  # before the new ranker enters the store (it becomes ranker:latest)
    tag, home = context.output("ranker", "tag"), Path(context.output("ranker", "home"))
    exported = context.run_dir / "ranker.bentomodel"
    bentoml.models.export_model(tag, str(exported), _model_store=model_store(home))
    try:
        bentoml.models.get(tag, _model_store=model_store(None))
    except bentoml.exceptions.NotFound:
        bentoml.models.import_model(str(exported), _model_store=model_store(None))
    folder = Path(context.output("candidates", "folder"))
    version = Version(folder.name, tag.split(":", 1)[1])
    release = publish(settings, version, settings.pipeline.canary_share, serving,
                      progress=lambda message: context.progress(f"  [publish] {message}"))
    state = f"canary to {release.share}% of users" if release.canary == version else "stable"
    return StepResult(outputs={"current": release.stable.candidates, "ranker": tag, "state": state},
                      versions={"candidates": folder.name, "ranker": version.ranker or ""}, note=state)


def precompute_step(context: RunContext) -> StepResult:
    """Layer 1 for the users active in the last `pipeline.precompute_active_days` (at most
    `pipeline.precompute_max_users`, the most recent), through the serving pipeline of
    the published version (`recsys precompute`)."""
    from bento_services.pipeline.batch import active_users, batch_settings
    from bento_services.pipeline.batch import precompute as run_precompute
    from bento_services.pipeline.rankers import build_serving_pipeline

    settings = context.settings
    users = active_users(settings, settings.pipeline.precompute_active_days, settings.pipeline.precompute_max_users)
    pipeline = build_serving_pipeline(batch_settings(settings))
    try:
        written = run_precompute(pipeline, users, settings.pipeline.precompute_k, as_of=context.as_of)
    finally:
        pipeline.close()
    return StepResult(inputs={"active_days": settings.pipeline.precompute_active_days,
                              "max_users": settings.pipeline.precompute_max_users, "active_users": len(users)},
                      metrics={"users": written, "k": settings.pipeline.precompute_k})


def drift_step(context: RunContext) -> StepResult:
    """The drift report (`recsys monitor drift`), optional: a failure is recorded, the run stays published."""
    if not context.settings.pipeline.drift:
        return StepResult(skipped=True, note="pipeline.drift is off")
    from monitoring.drift import run_drift

    run = run_drift(context.settings, progress=lambda message: context.progress(f"  [drift] {message}"))
    return StepResult(outputs={"folder": str(run.folder), "ok": run.verdict.ok, "line": run.verdict.line},
                      metrics=dict(run.verdict.metrics))


STEPS = [Step("lake", lake_step), Step("features", features_step), Step("feast_apply", feast_apply_step),
         Step("materialize", materialize_step), Step("candidates", candidates_step), Step("ranker", ranker_step),
         Step("evaluate", evaluate_step), Step("gate", gate_step), Step("publish", publish_step),
         Step("precompute", precompute_step), Step("drift", drift_step, optional=True)]


FEATURE_INPUTS = ("interactions", "catalog")  # the lake folders the Spark feature job reads


def lake_fingerprint(lake_root: Path) -> str:
    """A digest of the path, size and modification time of every file the feature job reads (interaction days,
    catalog snapshots): changes when any of them does, not when serving appends to the serving log."""
    digest = hashlib.sha256()
    for path in sorted(p for folder in FEATURE_INPUTS for p in (lake_root / folder).rglob("*.parquet")):
        stat = path.stat()
        digest.update(f"{path.relative_to(lake_root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


TRACKED_KINDS = {"candidates": "two-tower", "ranker": "ranker"}  # step -> the registered model its run makes
MAX_TAG = 5000  # characters of a tag value MLflow keeps


def _track(context: RunContext, step: str, record: RunRecord) -> dict[str, str | None]:
    """Record the step's training run (`training.tracking.track`, which never raises), tagged with the pipeline
    run's id: the outputs that find it again (both None when tracking is off or failed)."""
    from dataclasses import replace

    from training.tracking import track

    record = replace(record, tags={**record.tags, "pipeline_run": context.manifest.run_id})
    tracked = track(context.settings, record, progress=lambda message: context.progress(f"  [{step}] {message}"))
    return {"mlflow_run_id": tracked.run_id if tracked else None,
            "mlflow_version": tracked.model_version if tracked else None}


def _annotate_runs(context: RunContext, evaluation: dict[str, Any], latency: dict[str, float] | None,
                   reasons: list[str]) -> None:
    """The gate's findings onto the runs of the candidates and ranker steps: the held-out day's metrics of the new
    version, the serving one and popularity, the latency probe, and the verdict as tags."""
    from training.tracking import Tracked, annotate

    metrics = {f"heldout/{who}/{name}": value for who in ("new", "serving")
               for name, value in ((evaluation[who] or {}).get("metrics") or {}).items()}
    metrics |= {f"heldout/popularity/{name}": value for name, value in evaluation["popularity"].items()}
    metrics |= {f"gate/latency/{name}": value for name, value in (latency or {}).items()}
    tags = {"gate": "rejected" if reasons else "passed", "held_out_day": evaluation["held_out_day"],
            "gate_compared_with": evaluation["serving"]["version"] if evaluation["serving"] else "none"}
    if reasons:
        tags["gate_reasons"] = "; ".join(reasons)[:MAX_TAG]
    for step, kind in TRACKED_KINDS.items():
        outputs = context.manifest.data["steps"].get(step, {}).get("outputs") or {}
        if outputs.get("mlflow_run_id"):
            annotate(context.settings, Tracked(outputs["mlflow_run_id"], outputs.get("mlflow_version")), kind,
                     metrics, tags, progress=lambda message: context.progress(f"  [gate] {message}"))


def _run_ranker(context: RunContext) -> Any:
    from recsys.models.ranker import load_ranker

    return load_ranker(context.output("ranker", "tag"), Path(context.output("ranker", "home")))


def _serving_ranker(settings: Settings) -> Any | None:
    from recsys.models.ranker import MODEL_NAME, load_ranker
    from workflow.release import stable_version

    stable = stable_version(settings)
    try:
        return load_ranker(f"{MODEL_NAME}:{stable.ranker if stable is not None and stable.ranker else 'latest'}")
    except Exception:  # noqa: BLE001 - no ranker in service yet: its lists are in candidate order
        return None


def parse_as_of(value: str | None) -> str | None:
    """`--as-of DATE`: the run sees data up to the end of that day (UTC); an ISO time is taken as given."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(f"--as-of: {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from exc
    if len(value) == 10:  # a date: its whole day
        moment = moment + timedelta(days=1)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()

