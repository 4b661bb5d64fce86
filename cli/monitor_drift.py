"""`recsys monitor drift`: feature, prediction, input-data and embedding drift (Evidently), in the day's report
folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from cli.app import err, out, state
from cli.monitor import moment, monitor


def _say(console: Console, text: str) -> None:
    """As written: no markup, and paths and column names unwrapped."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@monitor.command("drift")
def drift(
    since: str | None = typer.Option(None, help="first serving time compared (ISO 8601, UTC if no zone); default "
                                     "monitoring.drift_window_hours before --until"),
    until: str | None = typer.Option(None, help="serving time to stop before; default just after the newest "
                                     "logged answer"),
    reference: Path | None = typer.Option(None, help="the ranker's training set (reference of feature drift); "
                                          "default data_dir/training/<service>.parquet"),
    service: str = typer.Option("ranker_v2", help="the feature service the ranker in service reads"),
    events_since: str | None = typer.Option(None, help="incoming events are those after this time; default the "
                                            "end of the serving candidate model's data window"),
) -> None:
    """Evidently drift reports (HTML and JSON); exit 1 when a threshold is crossed.

    Features: the ranker's served inputs against its training set (fails when more than
    monitoring.drift_share_threshold of them drifted). Predictions: scores, sources and degradation levels
    served against the days before. Events: missing values, unknown ids and the action mix of incoming events
    against the history. Embeddings: the newest candidate model's item vectors against the previous one's."""
    from monitoring.drift import run_drift

    run = run_drift(state.settings, moment(since), moment(until), reference, service, moment(events_since),
                    progress=lambda message: _say(err, f"[drift] {message}"))
    for part in run.parts:
        _say(out, f"  {'ok   ' if part.ok else 'ALERT'} {part.line}")
    _say(out, run.verdict.line)
    _say(out, str(run.folder))
    if not run.verdict.ok:
        raise typer.Exit(1)
