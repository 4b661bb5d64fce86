"""The `recsys` console command: one subcommand per step of the platform."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from recsys.backends import open_catalog, open_interactions, open_lake
from recsys.errors import InvalidInputError, RecsysError
from recsys.settings import Settings

app = typer.Typer(help="Feature-store-centric recommendation platform.", no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True)


class State:
    settings: Settings
    options: list[str]  # the global options as given, for child processes


state = State()
TUNED = Path(__file__).resolve().parent.parent / "training" / "tuned.json"  # the recorded `evaluate --tune`
AS_OF_HELP = ("request time the lists are computed at: 'data-end' (just after the lake's newest event, for data "
              "that ended in the past) or an ISO 8601 time; default now")


@app.callback()
def main(
    profile: str | None = typer.Option(None, help="local (embedded, default) or services (real servers)"),
    config: Path | None = typer.Option(None, help="TOML settings file; RECSYS_* variables override it"),
) -> None:
    state.settings = Settings.load(config_file=config, profile=profile)
    state.options = [*(["--profile", profile] if profile else []), *(["--config", str(config)] if config else [])]


@app.command()
def migrate() -> None:
    """Create the catalog and interaction schemas (idempotent)."""
    settings = state.settings
    with open_catalog(settings) as catalog:
        catalog.migrate()
    with open_interactions(settings) as interactions:
        interactions.migrate()
    out.print(f"schemas applied ({settings.profile} profile)")


@app.command("fetch-movielens")
def fetch_movielens() -> None:
    """Put a SHA-256-verified ml-latest-small into the data cache."""
    from ingestion.datasets import ensure_movielens

    settings = state.settings
    origin = ensure_movielens(settings.movielens_path, settings.shared_data_dir)
    out.print(f"ml-latest-small ready at {settings.movielens_path} (from {origin})")


@app.command("import-movielens")
def import_movielens(directory: Path | None = typer.Argument(None, help="default: the data cache")) -> None:
    """Import a MovieLens directory (movies, links, ratings, tags) into every store."""
    from ingestion.movielens import MovieLensSource

    _import(MovieLensSource(directory or state.settings.movielens_path))


@app.command("import")
def import_generic(directory: Path = typer.Argument(..., help="folder with interactions, items, users files")) -> None:
    """Import data in the generic format (see README) into every store."""
    from ingestion.generic import GenericSource

    _import(GenericSource(directory))


def _import(source: object) -> None:
    from ingestion.importer import Importer

    settings = state.settings
    with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
        catalog.migrate()
        interactions.migrate()
        report = Importer(catalog, interactions, open_lake(settings)).run(source)  # type: ignore[arg-type]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    out.print(
        f"imported {report.events_read:,} events ({report.events_new_in_lake:,} new), "
        f"{report.items:,} items, {report.users:,} users; {report.events_per_second:,.0f} events/s ({timings})"
    )


@app.command()
def generate(
    out_dir: Path = typer.Argument(..., help="folder to write the generic format into"),
    users: int = typer.Option(10_000), items: int = typer.Option(5_000),
    interactions: int = typer.Option(1_000_000), days: int = typer.Option(90),
    seed: int = typer.Option(7), categories: int = typer.Option(20),
) -> None:
    """Write a synthetic dataset (power-law popularity, latent tastes, sessions)."""
    from ingestion.synthetic import SyntheticConfig
    from ingestion.synthetic import generate as run

    config = SyntheticConfig(users=users, items=items, interactions=interactions, days=days, seed=seed,
                             categories=categories)
    written = run(config, out_dir)
    out.print(f"wrote {written:,} interactions, {items:,} items, {users:,} users to {out_dir}")


@app.command("build-features")
def build_features(
    as_of: datetime | None = typer.Option(None, help="last moment to build up to (default: last event)"),
) -> None:
    """Spark: lake + catalog -> point-in-time feature tables under feature_repo/data/features."""
    from ingestion.features.engineering import FeatureJobConfig, run_feature_job

    settings = state.settings
    config = FeatureJobConfig(
        lake=settings.lake_path, output=settings.feature_data_path, master=settings.features.spark_master,
        cadence_days=settings.features.snapshot_cadence_days,
        as_of=as_of.replace(tzinfo=as_of.tzinfo or UTC) if as_of else None,
    )
    started = time.perf_counter()
    written = run_feature_job(config, progress=lambda message: err.print(f"[spark] {message}"))
    out.print(", ".join(f"{table} {rows:,} rows" for table, rows in written.items())
              + f" in {time.perf_counter() - started:.1f}s")


@app.command("feast-apply")
def feast_apply() -> None:
    """`feast apply` for the current profile (SQLite online store for local, Redis for services)."""
    from recsys.features.store import apply_repo

    apply_repo(state.settings)
    out.print(f"feature repository applied ({state.settings.profile} profile)")


@app.command()
def materialize(
    end: datetime | None = typer.Option(None, help="materialize up to this moment (default: now)"),
) -> None:
    """Latest feature values into the online store, incrementally from the last run."""
    from ingestion.features.materialize import materialize as run
    from recsys.features.store import open_feature_store

    reports = run(open_feature_store(state.settings), end=end.replace(tzinfo=end.tzinfo or UTC) if end else None,
                  progress=lambda message: err.print(f"[materialize] {message}"))
    total = sum(r.rows for r in reports)
    seconds = sum(r.seconds for r in reports)
    out.print(f"materialized {total:,} rows in {seconds:.2f}s ({total / seconds if seconds else 0:,.0f} rows/s)")


@app.command("training-set")
def training_set(
    out_file: Path = typer.Argument(..., help="Parquet file to write"),
    service: str = typer.Option("ranker_v2", help="feature service"),
    limit: int = typer.Option(20_000, help="most recent rated events to label"),
) -> None:
    """Point-in-time training set: recent `rate` events (label: rating >= 4) with their features."""
    import pyarrow.compute as pc

    from recsys.features.store import open_feature_store
    from training.training_set import build_training_set

    settings = state.settings
    rated = open_lake(settings).interactions(filter=pc.field("action_type") == "rate").to_pandas()
    rated = rated.sort_values("event_time").tail(limit)
    labelled = rated.rename(columns={"event_time": "event_timestamp"})[["user_id", "item_id", "event_timestamp"]]
    labelled["label"] = (rated["value"] >= 4).astype("int64").to_numpy()
    result = build_training_set(open_feature_store(settings), labelled, service)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    result.frame.join(result.status.add_prefix("status__")).to_parquet(out_file, index=False)
    present = (result.status == "present").mean().mean()
    out.print(f"{len(result.frame):,} rows x {len(result.status.columns)} features of {service} -> {out_file} "
              f"({present:.0%} of values present, the rest typed defaults)")


@app.command("build-candidates")
def build_candidates(epochs: int = typer.Option(12, help="two-tower training epochs")) -> None:
    """Train the two-tower model, build the FAISS item index, write user vectors to the online store."""
    from embeddings.artifacts import build_candidate_artifacts
    from embeddings.train import TrainConfig
    from training.tracking import candidate_record, track

    config = TrainConfig(epochs=epochs)
    built = build_candidate_artifacts(state.settings, config,
                                      progress=lambda message: err.print(f"[candidates] {message}"))
    out.print(f"model {built.version}: {built.items:,} items indexed, {built.users:,} user vectors -> {built.folder}")
    track(state.settings, candidate_record(built, config),
          progress=lambda message: err.print(f"[candidates] {message}"))


@app.command()
def evaluate(
    out_dir: Path | None = typer.Option(None, help="where the table and plot go (default: data dir/evaluation)"),
    epochs: int = typer.Option(12, help="two-tower training epochs"),
    users_sample: int | None = typer.Option(None, help="evaluate a seeded sample of users"),
    validation: bool = typer.Option(False, help="judge on a split of the training part (for tuning), not the test"),
    with_ranker: bool = typer.Option(True, "--with-ranker/--without-ranker",
                                     help="also list the final lists: merged candidates re-ranked by the ranker"),
    save_ranker: bool = typer.Option(False, help="save the evaluated ranker (first seed) to the model store (what "
                                     "train-ranker does, without training it a second time)"),
    seeds: int = typer.Option(3, min=1, help="runs of the models that have randomness (mean ± std)"),
    tune: bool = typer.Option(False, help="first search every model's hyper-parameters on the validation split "
                              "(same budget each) and evaluate at the values chosen"),
    params: Path = typer.Option(TUNED, help="chosen hyper-parameters (a `--tune` result)"),
    served: bool = typer.Option(True, help="also replay the split through the serving pipeline itself (a world "
                                "of the training part is built: Spark features, candidates; needs --with-ranker)"),
) -> None:
    """Offline evaluation on a per-user temporal split: our candidates and final lists beside the tuned peers."""
    from embeddings.train import TrainConfig
    from training import tuning
    from training.evaluation import ModelFactory, run_evaluation
    from training.table import TableModels

    settings = state.settings
    items = open_lake(settings).latest_snapshot("items")
    if items is None:
        raise InvalidInputError("no item catalog in the lake; import data first")
    if save_ranker and (validation or not with_ranker):
        raise InvalidInputError("--save-ranker saves the ranker measured on the test split: it needs --with-ranker "
                                "and no --validation")
    folder = out_dir or settings.data_path / "evaluation"
    config = TrainConfig(epochs=epochs)
    if tune:
        from training.evaluation import split_for

        table = open_lake(settings).interactions(columns=["user_id", "item_id", "event_time", "action_type"])
        train, held = split_for(table, validation=True)
        found = tuning.tune(train, held, items, config, users_sample=users_sample,
                            log=lambda message: err.print(f"[tune] {message}"))
        tuning.save(found, folder / "tuned.json")
        out.print(f"tuned on the validation split: {json.dumps(found['chosen'])} -> {folder / 'tuned.json'}")
        params = folder / "tuned.json"
    chosen = tuning.load(params)
    store = None
    if with_ranker:
        from recsys.features.store import open_feature_store

        store = open_feature_store(settings)
    models = TableModels(items, config, chosen, store, progress=lambda message: err.print(f"[ranker] {message}"))
    factory: ModelFactory = models
    if served and with_ranker:
        from monitoring.served import with_served

        factory = with_served(models, settings, folder / "worlds", config,
                              progress=lambda message: err.print(f"[served] {message}"))
    run_evaluation(settings.lake_path, folder, factory, seeds=range(seeds), users_sample=users_sample,
                   validation=validation, params=chosen)
    if save_ranker:
        from training.ranker_eval import publish_ranker

        run = publish_ranker(models.ranked[0], settings.lake_path, settings.data_path / "ranker",
                             progress=lambda message: err.print(f"[ranker] {message}"), tracking=settings)
        out.print(f"saved {run.tag}: hold-out AUC {run.metrics['auc']:.4f}, NDCG@10 {run.metrics['ndcg@10']:.4f} "
                  f"(candidate order {run.metrics['candidate_ndcg@10']:.4f}); curve -> {run.curve}")


@app.command("train-ranker")
def train_ranker_command(
    depth: int = typer.Option(100, help="candidates re-ranked per user"),
    candidate_epochs: int = typer.Option(5, help="two-tower training epochs of the candidate generator"),
    out_dir: Path | None = typer.Option(None, help="where the curve and metrics go (default: data dir/ranker)"),
) -> None:
    """Train the Wide & Deep ranker on the temporal split, measure it on the hold-out, save it to the model store."""
    from recsys.features.store import open_feature_store
    from training.ranker_eval import RankerEvalConfig, train_and_save

    settings = state.settings
    items = open_lake(settings).latest_snapshot("items")
    if items is None:
        raise InvalidInputError("no item catalog in the lake; import data first")
    run = train_and_save(settings.lake_path, items, open_feature_store(settings),
                         out_dir or settings.data_path / "ranker",
                         RankerEvalConfig(depth=depth, candidate_epochs=candidate_epochs),
                         progress=lambda message: err.print(f"[ranker] {message}"), tracking=settings)
    out.print(f"saved {run.tag}: hold-out AUC {run.metrics['auc']:.4f}, NDCG@10 {run.metrics['ndcg@10']:.4f} "
              f"(candidate order {run.metrics['candidate_ndcg@10']:.4f}); curve -> {run.curve}")


@app.command()
def summary() -> None:
    """Row counts in every store."""
    _print_summary(state.settings)


@app.command()
def serve() -> None:
    """Run the recommendation API with uvicorn on serving.host:serving.port (development; the Bento is production)."""
    import uvicorn

    from bento_services.api.http import app_from_settings

    settings = state.settings
    uvicorn.run(app_from_settings(settings), host=settings.serving.host, port=settings.serving.port,
                access_log=False)


@app.command()
def demo() -> None:
    """The main job on ml-latest-small: import, features, embeddings and index, ranker, precompute, the
    evaluation table, a sample request and response, then a simulated day of traffic and its reports."""
    fetch_movielens()
    migrate()
    import_movielens(None)
    _print_summary(state.settings)
    build_features(None)
    feast_apply()
    # ml-latest-small ends in 2018: materialize and read "as of" the end of the data, not today.
    from cli.demo_steps import newest_user

    user, as_of = newest_user(state.settings)
    materialize(as_of)
    training_set(state.settings.data_path / "training" / "ranker_v2.parquet", "ranker_v2", 20_000)
    build_candidates(epochs=12)
    # One run trains the split's candidate models and the ranker once: the evaluation measures the ranker and
    # publishes that same model (what `train-ranker` would train again), before precompute serves with it.
    evaluate(out_dir=None, epochs=12, users_sample=None, validation=False, with_ranker=True, save_ranker=True,
             seeds=1, tune=False, params=TUNED, served=True)  # one seed; the README's: `evaluate --tune --seeds 3`
    precompute(k=100, active_days=None, as_of="data-end")  # ml-latest-small ends in 2018: serve as of then
    from cli.demo_steps import demo_day, print_online_sample, sample_request

    sample_request(state.settings, user)
    print_online_sample(state.settings, user, as_of)
    demo_day(state.settings)


def _print_summary(settings: Settings) -> None:
    table = Table(title=f"stores ({settings.profile} profile)")
    table.add_column("store")
    table.add_column("table")
    table.add_column("rows", justify="right")
    with open_catalog(settings) as catalog:
        for name, count in catalog.counts().items():
            table.add_row("catalog", name, f"{count:,}")
    with open_interactions(settings) as interactions:
        for name, count in interactions.counts().items():
            table.add_row("interactions", name, f"{count:,}")
    table.add_row("lake", "interactions", f"{open_lake(settings).count_interactions():,}")
    out.print(table)


@app.command()
def consume(
    names: list[str] | None = typer.Argument(None, help="consumers to run (default all): "
                                             "store-writer, lake-writer, sessions, ..."),
    status: bool = typer.Option(False, "--status", help="print each group's lag per partition and exit"),
    metrics_port: int | None = typer.Option(None, help="Prometheus port (one consumer; default from settings)"),
) -> None:
    """Run the streaming consumers of interaction-events (services profile): one process per consumer."""
    from recsys.backends import CONSUMERS
    from recsys.streaming.process import serve_consumer, supervise

    settings = state.settings
    chosen = list(names or CONSUMERS)
    unknown = [n for n in chosen if n not in CONSUMERS]
    if unknown:
        raise InvalidInputError(f"unknown consumer {', '.join(unknown)}; expected {', '.join(CONSUMERS)}")
    if status:
        _print_lag(settings, chosen)
        return
    if settings.profile != "services":
        raise InvalidInputError("in the local profile the consumers run inside the API (the in-process bus); "
                                "run `recsys --profile services consume` against Kafka")
    if len(chosen) == 1:
        serve_consumer(settings, chosen[0], metrics_port)
    else:
        raise SystemExit(supervise(chosen, state.options))


def _print_lag(settings: Settings, names: list[str]) -> None:
    from recsys.streaming.topics import group_lag

    lag = group_lag(settings, names)
    table = Table(title=f"lag on {settings.kafka.topic} (events not yet committed)")
    table.add_column("consumer")
    table.add_column("group")
    table.add_column("total", justify="right")
    table.add_column("per partition")
    for name, partitions in lag.items():
        table.add_row(name, settings.streaming.group_prefix + name, str(sum(partitions.values())),
                      " ".join(f"{p}:{n}" for p, n in sorted(partitions.items())))
    out.print(table)


@app.command("recommend-batch")
def recommend_batch(
    out_file: Path = typer.Option(..., "--out", help="where to write: a .csv or .parquet file"),
    users_file: Path | None = typer.Option(None, "--users", help="user ids: one per line, or a user_id column"),
    all_active: bool = typer.Option(False, "--all-active", help="every user with events in the lake"),
    k: int = typer.Option(50, "--k", min=1, help="recommendations per user"),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
) -> None:
    """Top-K recommendations for many users through the serving pipeline, to CSV or Parquet."""
    from bento_services.pipeline.batch import (
        active_users,
        batch_settings,
        parse_as_of,
        read_users,
        recommend_batch,
        write_recommendations,
    )
    from bento_services.pipeline.rankers import build_serving_pipeline

    if (users_file is None) == (not all_active):
        raise InvalidInputError("give exactly one of --users FILE or --all-active")
    settings = state.settings
    users = read_users(users_file) if users_file is not None else active_users(settings)
    moment = parse_as_of(as_of, settings)
    pipeline = build_serving_pipeline(batch_settings(settings))
    try:
        frame = recommend_batch(pipeline, users, k, show_progress=True, as_of=moment)
    finally:
        pipeline.close()
    write_recommendations(frame, out_file)
    out.print(f"{frame['user_id'].nunique():,} users x top {k} -> {out_file} "
              f"({len(users) - frame['user_id'].nunique():,} unknown users left out)")


@app.command()
def precompute(
    k: int = typer.Option(100, "--k", min=1, help="list length per user"),
    active_days: int | None = typer.Option(None, help="only users active in the last N days of data"),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
) -> None:
    """Layer 1: each active user's top K into Redis (with its TTL) and the precomputed_recommendations table."""
    from bento_services.pipeline.batch import active_users, batch_settings, parse_as_of
    from bento_services.pipeline.batch import precompute as run_precompute
    from bento_services.pipeline.rankers import build_serving_pipeline

    settings = state.settings
    users = active_users(settings, active_days)
    moment = parse_as_of(as_of, settings)
    pipeline = build_serving_pipeline(batch_settings(settings))
    try:
        written = run_precompute(pipeline, users, k, show_progress=True, as_of=moment)
    finally:
        pipeline.close()
    out.print(f"precomputed top {k} for {written:,} users (expires in {settings.serving.precomputed_ttl_seconds:,}s)")


import cli.monitor_all  # noqa: E402, F401
import cli.monitor_board  # noqa: E402, F401
import cli.monitor_drift  # noqa: E402, F401
import cli.monitor_experiment  # noqa: E402, F401
import cli.monitor_quality  # noqa: E402, F401
import cli.runs  # noqa: E402, F401
from cli.monitor import experiment, monitor  # noqa: E402 - the groups' commands register on import
from cli.pipeline import models, pipeline  # noqa: E402
from cli.release import release  # noqa: E402

app.add_typer(monitor, name="monitor")
app.add_typer(experiment, name="experiment")
app.add_typer(pipeline, name="pipeline")
app.add_typer(models, name="models")
app.add_typer(release, name="release")


def run() -> None:
    """Console entry point: domain errors become one clear line and a non-zero exit."""
    try:
        app()
    except RecsysError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc.message}")
        raise SystemExit(2 if exc.http_status < 500 else 1) from exc
