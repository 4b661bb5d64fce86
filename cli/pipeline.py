"""`recsys pipeline run` (the daily pipeline, `workflow.daily`) and `recsys models list` (`workflow.registry`)."""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

pipeline = typer.Typer(help="The daily pipeline: lake to published version, behind a quality gate.",
                       no_args_is_help=True)
models = typer.Typer(help="Model versions: candidate models and rankers, with data window, metrics and state.",
                     no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@pipeline.command("run")
def run(
    as_of: str | None = typer.Option(None, "--as-of", help="run for data up to the end of this day (YYYY-MM-DD, "
                                     "UTC) or this ISO 8601 time; default just after the lake's newest event"),
    full: bool = typer.Option(False, "--full", help="rebuild every step's output even when its input is unchanged"),
    resume: str | None = typer.Option(None, "--resume", help="a failed run's id: continue from its failed step"),
    import_dir: Path | None = typer.Option(None, "--import", help="first import this folder (generic format)"),
) -> None:
    """Lake, features, materialize, candidates, ranker, evaluation, gate, publication, precompute, drift.

    Exit 0: published; 1: rejected by the gate (models/CURRENT untouched, artifacts kept) or failed at a step
    (resume it with --resume RUN_ID); 2: another run holds the lock, or bad options.
    """
    from cli.app import state
    from workflow.daily import run_pipeline
    from workflow.steps import parse_as_of

    with redirect_stdout(sys.stderr):  # what the steps' libraries print is progress too; stdout is the outcome
        outcome = run_pipeline(state.settings, as_of=parse_as_of(as_of), full=full, resume=resume,
                               import_dir=import_dir,
                               progress=lambda message: err.print(message, markup=False, highlight=False))
    out.print(f"run {outcome.run_id}: {outcome.state} (manifest {outcome.manifest})")
    for reason in outcome.reasons:
        out.print(f"  - {reason}", markup=False)
    if outcome.state == "failed":
        out.print(f"resume with: recsys pipeline run --resume {outcome.run_id}")
    if outcome.state != "published":
        raise typer.Exit(1)


@models.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="one JSON document instead of the table")) -> None:
    """Every candidate model version under models/ and every ranker in the model store."""
    from cli.app import state
    from workflow.registry import list_models

    found = list_models(state.settings)
    if as_json:
        out.print_json(json.dumps([m.as_dict() for m in found]))
        return
    table = Table(title="model versions")
    for column in ("kind", "version", "state", "data window", "created", "metrics"):
        table.add_column(column)
    for model in found:
        shown = [(k, v) for k, v in model.metrics.items() if k not in ("users", "lists", "rows")][:4]  # --json: all
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in shown)
        window = f"{(model.data_start or '?')[:10]} .. {(model.data_end or '?')[:10]}"
        table.add_row(model.kind, model.version, model.state, window, (model.created_at or "")[:19], metrics)
    out.print(table)
