"""`recsys release status|promote|rollback|check` (`workflow.release`): the stable version, the canary and its share
of users, the guardrails between them."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from recsys.release import Release

release = typer.Typer(help="Releases: the stable version, a canary to a share of users, promotion and rollback. "
                      "Serving processes follow the change within serving.release_poll_seconds.",
                      no_args_is_help=True)
out = Console()


@release.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="one JSON document")) -> None:
    """Stable and canary versions, the canary's share, its guardrail figures against stable, the recent history."""
    from cli.app import state
    from recsys.release import read_release
    from workflow.release import guardrails, stable_version

    settings = state.settings
    record = read_release(settings.data_path)
    verdict = guardrails(settings, record) if record is not None and record.canary is not None else None
    if as_json:
        document: dict[str, object] = record.as_dict() if record is not None else {
            "stable": str(stable_version(settings)), "record": None}
        if verdict is not None:
            document["guardrails"] = {"action": verdict.action, "breaches": verdict.breaches,
                                      "stable": vars(verdict.stable), "canary": vars(verdict.canary)}
        out.print_json(json.dumps(document))
        return
    if record is None:
        out.print(f"stable: {stable_version(settings) or 'nothing published'} (no release record yet)")
        return
    out.print(f"stable: {record.stable}")
    out.print(f"canary: {record.canary} to {record.share}% of users" if record.canary else "canary: none")
    if verdict is not None:
        window = settings.pipeline.guardrail_window_minutes
        for name, figures in (("stable", verdict.stable), ("canary", verdict.canary)):
            out.print(f"  {name}: {figures.requests} answers in the last {window:g} min, degraded "
                      f"{figures.degraded_share:.1%}, p99 {figures.p99_ms:.1f} ms of {figures.computed} computed")
        out.print(f"  guardrails: {verdict.action}" + (f" ({'; '.join(verdict.breaches)})" if verdict.breaches
                                                      else ""))
    if record.previous:
        out.print(f"previous stable: {record.previous[-1]}")
    for event in record.history[-5:]:
        out.print(f"  {event['at']} {event['action']}: stable {event['stable']}"
                  + (f", canary {event['canary']} {event['share']}%" if event["canary"] else "")
                  + (f" ({event['reason']})" if event["reason"] else ""), markup=False)


@release.command("promote")
def promote(auto: bool = typer.Option(False, "--auto", help="only when the guardrails hold (as `check`)")) -> None:
    """The canary's next share: 5 -> 50 -> 100; at 100 it becomes the stable version."""
    if auto:
        check()
        return
    from cli.app import state
    from workflow.release import promote as run

    _show(run(state.settings))


@release.command("rollback")
def rollback() -> None:
    """Drop the canary (its users back on stable at once); with no canary, stable returns to the previous one."""
    from cli.app import state
    from workflow.release import rollback as run

    _show(run(state.settings))


@release.command("check")
def check() -> None:
    """One guardrail check, for a CronJob or a loop: promote when the canary's degraded share and p99 hold against
    stable's, roll back when one breaks, hold while either has too few answers. Exit 1 after a rollback."""
    from cli.app import state
    from workflow.release import check as run

    action, verdict, record = run(state.settings)
    if verdict is None:
        out.print("no canary: nothing to check")
        return
    out.print(f"{action}" + (f": {'; '.join(verdict.breaches)}" if verdict.breaches else "")
              + f" (canary {verdict.canary.requests} answers, stable {verdict.stable.requests})", markup=False)
    if record is not None and action != "hold":
        _show(record)
    if action == "rollback":
        raise typer.Exit(1)


def _show(record: Release) -> None:
    out.print(f"stable: {record.stable}")
    out.print(f"canary: {record.canary} to {record.share}% of users" if record.canary else "canary: none")
