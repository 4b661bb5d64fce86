"""`recsys monitor build`: the index page of the newest reports."""

from __future__ import annotations

import typer

from cli.app import out, state
from cli.monitor import monitor


@monitor.command("build")
def build(
    fail_on_alert: bool = typer.Option(False, "--fail-on-alert", help="exit 1 when a report on the page is past "
                                       "its thresholds (the page is written either way)"),
) -> None:
    """Write the index page linking the newest drift, quality, skew and experiment reports."""
    from monitoring.board import build as build_board

    board = build_board(state.settings)
    out.print(f"index: {board.summary()}")
    out.print(str(board.path))
    if fail_on_alert and not board.ok:
        raise typer.Exit(1)
