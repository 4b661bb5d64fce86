"""The `recsys` console command: one subcommand per step of the platform."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from recsys.errors import RecsysError
from recsys.settings import Settings
from recsys.stores import open_catalog, open_interactions, open_lake

app = typer.Typer(help="Feature-store-centric recommendation platform.", no_args_is_help=True, add_completion=False)
out = Console()


class State:
    settings: Settings


state = State()


@app.callback()
def main(
    profile: str | None = typer.Option(None, help="local (embedded, default) or services (real servers)"),
    config: Path | None = typer.Option(None, help="TOML settings file; RECSYS_* variables override it"),
) -> None:
    state.settings = Settings.load(config_file=config, profile=profile)


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


@app.command()
def summary() -> None:
    """Row counts in every store."""
    _print_summary(state.settings)


@app.command()
def demo() -> None:
    """The main job on the current profile: fetch ml-latest-small, migrate, import, summarise."""
    fetch_movielens()
    migrate()
    import_movielens(None)
    _print_summary(state.settings)


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


def run() -> None:
    """Console entry point: domain errors become one clear line and a non-zero exit."""
    try:
        app()
    except RecsysError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc.message}")
        raise SystemExit(2 if exc.http_status < 500 else 1) from exc
