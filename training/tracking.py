"""Experiment tracking: every training run recorded in MLflow, where ML engineers browse and compare them.

A run holds the model's parameters, metrics, curves (one value per step), small artifacts (metadata, plots;
never the weights) and tags: kind, version, data window, and `serving_ref`, what serving loads (the
`models/<version>` folder of a two-tower build, the BentoML tag of a ranker). Each published version is also
a version of the registered model of its kind, whose source points at those files: the BentoML model store
and `models/` stay what serving loads; MLflow only describes them.

Where: `Settings.tracking_uri`, a sqlite store under data_dir/mlruns by default (MLflow 3 refuses its
plain-file store unless told otherwise), a tracking server's URL in production (`RECSYS_TRACKING__URI`).
Recording never fails the training it describes: `track` logs what went wrong and returns None.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recsys.settings import Settings

if TYPE_CHECKING:  # not at run time: a release command looking up runs needs no torch
    from embeddings.artifacts import CandidateArtifacts
    from embeddings.train import TrainConfig

log = logging.getLogger(__name__)

MAX_CURVE_POINTS = 1000  # a longer curve is logged as the means of this many equal windows
SERVING_REF = "serving_ref"


@dataclass(frozen=True)
class RunRecord:
    """One training run as tracking records it."""

    kind: str  # the registered model's name: "two-tower", "ranker"
    version: str  # the model version serving knows it by
    serving_ref: str  # what serving loads: a models/<version> folder or a BentoML tag
    source: Path | None = None  # the files behind serving_ref (the registered version's source)
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    curves: Mapping[str, Sequence[float]] = field(default_factory=dict)  # name -> one value per step
    first_step: int = 0  # the step of each curve's first value (1 for curves by epoch)
    artifacts: Sequence[Path] = ()  # files or folders, copied into the run under their own names...
    artifacts_base: Path | None = None  # ... or, those inside this folder, under their path relative to it
    tags: Mapping[str, str] = field(default_factory=dict)
    data_start: datetime | None = None
    data_end: datetime | None = None


@dataclass(frozen=True)
class Tracked:
    run_id: str
    model_version: str | None  # the registered version's number, None when registration failed


@dataclass(frozen=True)
class VersionInfo:
    """A registered version: which run made it and what serving loads for it."""

    name: str
    version: str
    run_id: str | None
    serving_ref: str | None
    source: str
    created: datetime
    tags: dict[str, str]
    metrics: dict[str, float]


def track(settings: Settings, record: RunRecord, progress: Callable[[str], None] = print) -> Tracked | None:
    """Log the run and register its version; never raises. None when tracking is off or the store failed
    (the reason is logged and reported through `progress`)."""
    if not settings.tracking.enabled:
        return None
    try:
        run_id = log_run(settings, record)
    except Exception as exc:  # a tracking store down must not fail the training it describes
        _report(progress, f"run of {record.kind} {record.version} not recorded", exc)
        return None
    try:
        number: str | None = register_version(settings, record, run_id)
    except Exception as exc:  # as above
        _report(progress, f"{record.kind} {record.version} not registered", exc)
        number = None
    where = f"version {number} of {record.kind}" if number else "not registered"
    progress(f"tracking: run {run_id} in {settings.tracking_uri} (experiment {settings.tracking.experiment}), "
             f"{where}")
    return Tracked(run_id, number)


def annotate(settings: Settings, tracked: Tracked, kind: str, metrics: Mapping[str, float] | None = None,
             tags: Mapping[str, str] | None = None, progress: Callable[[str], None] = print) -> bool:
    """Add what was learnt after the run (the gate's offline metrics, its verdict, a release state) to the
    run's metrics and to its registered version's tags; never raises. False when it could not."""
    if not settings.tracking.enabled:
        return False
    try:
        from mlflow.entities import Metric

        with _client(settings) as client:
            now = int(time.time() * 1000)
            client.log_batch(tracked.run_id, metrics=[Metric(_key(k), float(v), now, 0)
                                                      for k, v in (metrics or {}).items()])
            for key, value in (tags or {}).items():
                client.set_tag(tracked.run_id, key, value)
                if tracked.model_version is not None:
                    client.set_model_version_tag(kind, tracked.model_version, key, value)
    except Exception as exc:  # as in `track`
        _report(progress, f"run {tracked.run_id} not annotated", exc)
        return False
    return True


def find_run(settings: Settings, kind: str, version: str) -> Tracked | None:
    """The newest run that recorded `kind` `version` (by its tags), with its registered version's number; None
    when no run did (or no local store exists yet)."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None  # nothing was ever recorded here: do not create a store to search it
    with _client(settings) as client:
        experiment = client.get_experiment_by_name(settings.tracking.experiment)
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id], f"tags.kind = '{kind}' and tags.version = '{version}'",
                                  max_results=1, order_by=["attributes.start_time DESC"])
        if not runs:
            return None
        run_id = runs[0].info.run_id
        registered = client.search_model_versions(f"name = '{kind}' and run_id = '{run_id}'")
        return Tracked(str(run_id), str(registered[0].version) if registered else None)


def annotate_version(settings: Settings, kind: str, version: str, metrics: Mapping[str, float] | None = None,
                     tags: Mapping[str, str] | None = None, progress: Callable[[str], None] = print) -> bool:
    """`annotate` the newest run of `kind` `version`, found by its tags (a release knows versions, not runs);
    never raises. False when tracking is off, no run recorded that version, or the store failed."""
    if not settings.tracking.enabled:
        return False
    try:
        tracked = find_run(settings, kind, version)
    except Exception as exc:  # as in `track`
        _report(progress, f"run of {kind} {version} not looked up", exc)
        return False
    return tracked is not None and annotate(settings, tracked, kind, metrics, tags, progress)


def log_run(settings: Settings, record: RunRecord) -> str:
    """Record one finished run (parameters, metrics, curves, artifacts, tags); returns its run id."""
    from mlflow.entities import Metric, Param

    with _client(settings) as client:
        run = client.create_run(_experiment_id(settings, client), run_name=f"{record.kind} {record.version}",
                                tags=_run_tags(record))
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(_key(k), float(v), now, 0) for k, v in record.metrics.items()]
            for name, values in record.curves.items():
                metrics += [Metric(_key(name), value, now, record.first_step + step)
                            for step, value in _curve_points(values)]
            params = [Param(_key(k), _param_value(v)) for k, v in _flat(record.params).items()]
            for start in range(0, len(params), 100):  # MLflow's limits per call
                client.log_batch(run_id, params=params[start:start + 100])
            for start in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[start:start + 1000])
            for path in record.artifacts:
                where = _artifact_path(path, record.artifacts_base)
                if path.is_dir():
                    client.log_artifacts(run_id, str(path), artifact_path=where)
                else:
                    parent = Path(where).parent.as_posix()
                    client.log_artifact(run_id, str(path), artifact_path=None if parent == "." else parent)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        return str(run_id)


def register_version(settings: Settings, record: RunRecord, run_id: str) -> str:
    """A new version of the registered model `record.kind`, made by `run_id`, its source the files serving
    loads (nothing is copied); returns its number."""
    from mlflow.exceptions import MlflowException

    with _client(settings) as client:
        try:
            client.get_registered_model(record.kind)
        except MlflowException:
            client.create_registered_model(record.kind, description="published by the recsys platform; each "
                                           "version's serving_ref tag is what serving loads")
        source = record.source.resolve().as_uri() if record.source is not None else record.serving_ref
        created = client.create_model_version(record.kind, source, run_id=run_id, tags=_run_tags(record),
                                              description=f"{record.kind} {record.version}")
        return str(created.version)


def list_versions(settings: Settings, name: str | None = None) -> list[VersionInfo]:
    """Registered versions (of `name`, or of every model), newest first, with their run's metrics."""
    with _client(settings) as client:
        found = client.search_model_versions(f"name = '{name}'" if name else None)
        versions = []
        for mv in found:
            metrics = dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {}
            versions.append(VersionInfo(mv.name, str(mv.version), mv.run_id, mv.tags.get(SERVING_REF), mv.source,
                                        datetime.fromtimestamp(mv.creation_timestamp / 1000).astimezone(),
                                        dict(mv.tags), metrics))
    return sorted(versions, key=lambda v: (v.created, v.name, int(v.version)), reverse=True)


def runs_frame(settings: Settings, kind: str | None = None, max_results: int = 100) -> pd.DataFrame:
    """The experiment's runs, newest first: one row per run with its tags, metrics and parameters (columns
    `metrics.<name>`, `params.<name>`), the table to compare them by."""
    with _client(settings) as client:
        experiment = client.get_experiment_by_name(settings.tracking.experiment)
        if experiment is None:
            return pd.DataFrame()
        runs = client.search_runs([experiment.experiment_id], f"tags.kind = '{kind}'" if kind else "",
                                  max_results=max_results, order_by=["attributes.start_time DESC"])
    rows = []
    for run in runs:
        rows.append({"run_id": run.info.run_id, "started": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
                     "status": run.info.status, "kind": run.data.tags.get("kind"),
                     "version": run.data.tags.get("version"), "data_end": run.data.tags.get("data_end"),
                     **{f"metrics.{k}": v for k, v in sorted(run.data.metrics.items())},
                     **{f"params.{k}": v for k, v in sorted(run.data.params.items())}})
    return pd.DataFrame(rows)


def candidate_record(built: CandidateArtifacts, config: TrainConfig) -> RunRecord:
    """The run of a two-tower build: its training config, how it began (`start.*`: the version it was warm-started
    from, epochs trained, replay share, rows copied; `embeddings.warm_start.Start`), loss curve, throughput and
    sizes; the metadata and loss plot of `models/<version>/` as artifacts (not the weights, index or neighbours)."""
    meta = json.loads((built.folder / "two_tower" / "meta.json").read_text())
    losses = [float(v) for v in meta.get("losses", [])]
    epochs = built.start.epochs or config.epochs  # a warm start trains its own number of epochs
    last_epoch = losses[-max(1, math.ceil(len(losses) / max(epochs, 1))):]
    metrics = {"items": float(built.items), "users": float(built.users),
               "examples_per_second": float(meta.get("examples_per_second", float("nan")))}
    if last_epoch:
        metrics["loss_last_epoch"] = sum(last_epoch) / len(last_epoch)
    artifacts = [built.folder / "two_tower" / "meta.json", built.folder / "two_tower" / "loss.png"]
    artifacts += [built.folder / part / "meta.json" for part in ("item_index", "item_neighbours")]
    return RunRecord(kind="two-tower", version=built.version, serving_ref=f"models/{built.version}",
                     source=built.folder, params={**dataclasses.asdict(config), "start": built.start.as_dict()},
                     metrics=metrics,
                     curves={"loss": losses}, artifacts=[a for a in artifacts if a.exists()],
                     artifacts_base=built.folder,
                     data_start=_time(meta.get("data_start")), data_end=_time(meta.get("data_end")))


# -- helpers ------------------------------------------------------------------------------------------------
@contextmanager
def _client(settings: Settings) -> Iterator[Any]:
    """An MlflowClient on the settings' store, its HTTP requests bounded by the settings (MLflow reads those
    limits from the environment only: set for the call, restored after)."""
    from mlflow import MlflowClient

    limits = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(settings.tracking.http_timeout_s),
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.tracking.http_retries),
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    saved = {name: os.environ.get(name) for name in limits}
    os.environ.update(limits)
    try:
        uri = settings.tracking_uri
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _experiment_id(settings: Settings, client: Any) -> str:
    experiment = client.get_experiment_by_name(settings.tracking.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    root = settings.tracking.artifact_root
    if root is None and not settings.tracking_uri.startswith(("http://", "https://")):
        root = (settings.data_path.resolve() / "mlruns" / "artifacts").as_uri()
    return str(client.create_experiment(settings.tracking.experiment, artifact_location=root))


def _artifact_path(path: Path, base: Path | None) -> str:
    if base is not None and path.resolve().is_relative_to(base.resolve()):
        return path.resolve().relative_to(base.resolve()).as_posix()
    return path.name


def _run_tags(record: RunRecord) -> dict[str, str]:
    tags = {"kind": record.kind, "version": record.version, SERVING_REF: record.serving_ref}
    if record.data_start is not None:
        tags["data_start"] = record.data_start.isoformat()
    if record.data_end is not None:
        tags["data_end"] = record.data_end.isoformat()
    return {**tags, **record.tags}


def _curve_points(values: Sequence[float]) -> list[tuple[int, float]]:
    """(step, value) pairs; past MAX_CURVE_POINTS, each window's mean at the window's last step."""
    if len(values) <= MAX_CURVE_POINTS:
        return [(step, float(v)) for step, v in enumerate(values)]
    width = math.ceil(len(values) / MAX_CURVE_POINTS)
    windows = [(start, values[start:start + width]) for start in range(0, len(values), width)]
    return [(start + len(window) - 1, float(sum(window) / len(window))) for start, window in windows]


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _key(name: str) -> str:
    """MLflow's names allow letters, digits, `_-. /`: `ndcg@10` is logged as `ndcg_at_10`."""
    return re.sub(r"[^\w\-. /]", "_", name.replace("@", "_at_"))


def _param_value(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _report(progress: Callable[[str], None], what: str, exc: BaseException) -> None:
    log.debug("tracking: %s", what, exc_info=exc)  # the traceback, for whoever turns debug logging on
    progress(f"tracking: {what} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
             "training goes on")
