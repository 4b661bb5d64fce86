"""`recsys monitor ...` and `recsys experiment ...`: the reports a monitoring or product team reads.

The command groups are defined here; each report's commands live beside it (`cli/monitor_*.py`) and are
registered by importing them in `cli/app.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import typer

monitor = typer.Typer(help="Reports on what was served: drift, ranking quality, train/serve skew, the index page.",
                      no_args_is_help=True)
experiment = typer.Typer(help="A/B experiments: per-variant metrics, tests, ratio check and guardrails.",
                         no_args_is_help=True)


def moment(text: str | None) -> datetime | None:
    """A `--since`/`--until` option: ISO 8601, UTC when it names no zone; None when not given."""
    if text is None:
        return None
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
