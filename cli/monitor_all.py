"""`recsys monitor all`: drift, quality, skew and every experiment's report, then the index page."""

from __future__ import annotations

import typer

from cli.app import out, state
from cli.monitor import moment, monitor


@monitor.command("all")
def run_all(
    since: str | None = typer.Option(None, help="first serving time to read (ISO 8601, UTC if no zone); default "
                                     "each report's own window"),
    until: str | None = typer.Option(None, help="serving time to stop before (ISO 8601)"),
) -> None:
    """Every report, then the index page; exit 1 when any is past its thresholds."""
    from monitoring.run import run_all as run

    outcome = run(state.settings, moment(since), moment(until), progress=lambda line: out.print(line))
    for verdict in outcome.verdicts:
        mark = "OK   " if verdict.ok else "ALERT"
        out.print(f"{mark} {verdict.kind}: {verdict.line}", markup=False, highlight=False)
    out.print(f"index: {outcome.board.summary()}  {outcome.board.path}", markup=False, highlight=False)
    if not outcome.ok:
        raise typer.Exit(1)
