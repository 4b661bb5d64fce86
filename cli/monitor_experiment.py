"""`recsys experiment report NAME`: per-arm metrics with intervals, tests against control, the ratio check and
the guardrails, as HTML and JSON in the day's report folder."""

from __future__ import annotations

import typer

from cli.app import out, state
from cli.monitor import experiment, moment


@experiment.command("report")
def report(
    name: str = typer.Argument(..., help="the experiment: the `experiment` of its variants in serving.experiments"),
    since: str | None = typer.Option(None, help="first serving time to read (ISO 8601, UTC if no zone); "
                                     "default the log's start"),
    until: str | None = typer.Option(None, help="serving time to stop before (ISO 8601); default the log's end"),
) -> None:
    """Analyse experiment NAME; exit 1 on a sample-ratio mismatch or a broken guardrail."""
    from monitoring.experiment_report import report as write_report

    folder, verdict = write_report(state.settings, name, moment(since), moment(until))
    out.print(verdict.line, markup=False, highlight=False)
    out.print(str(folder / verdict.files[0]), markup=False, highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)
