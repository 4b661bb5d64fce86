"""`recsys monitor quality` (Evidently's recsys metrics, online and offline) and `recsys monitor skew`
(train/serve skew of the ranker's input), in the day's report folder."""

from __future__ import annotations

import typer

from cli.app import out, state
from cli.monitor import moment, monitor

SINCE_HELP = "first serving time to read (ISO 8601, UTC if no zone); default a day before --until"
UNTIL_HELP = "serving time to stop before (ISO 8601); default just after the newest logged answer"



@monitor.command("quality")
def quality(
    since: str | None = typer.Option(None, help=SINCE_HELP),
    until: str | None = typer.Option(None, help=UNTIL_HELP),
    offline: bool = typer.Option(True, "--offline/--no-offline", help="also compare the newest ranker in the "
                                 "model store with the one in service on the lake's last day"),
) -> None:
    """Evidently's recsys metrics on the served lists and on the newest ranker; exit 1 on a quality drop.

    Online: per variant and model version, against the clicks attributed to the lists. Offline: the newest
    ranker beside the one in service on the lake's last day. A drop is NDCG@k more than
    monitoring.quality_max_drop below the reference (the most served group; the ranker in service)."""
    from monitoring.quality import quality_report

    folder, verdict = quality_report(state.settings, moment(since), moment(until), offline=offline)
    out.print(verdict.line, markup=False, highlight=False)
    out.print(str(folder), markup=False, highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)


@monitor.command("skew")
def skew(
    since: str | None = typer.Option(None, help=SINCE_HELP),
    until: str | None = typer.Option(None, help=UNTIL_HELP),
) -> None:
    """Train/serve skew of the ranker's input; exit 1 when a feature is skewed.

    The sampled requests' logged features against the same features recomputed point in time through Feast;
    a feature is skewed when more than monitoring.skew_threshold of its values mismatch."""
    from monitoring.skew import skew_report

    folder, verdict = skew_report(state.settings, moment(since), moment(until))
    out.print(verdict.line, markup=False, highlight=False)
    out.print(str(folder), markup=False, highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)
