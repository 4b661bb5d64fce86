"""The time window a report covers: given, or the day that ends with the newest logged answer."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from recsys import serving_log
from recsys.settings import Settings


def report_window(settings: Settings, since: datetime | None = None, until: datetime | None = None,
                  days: float = 1.0) -> tuple[datetime | None, datetime | None]:
    """(`since`, `until`): missing ends are filled from the serving log, whose newest answer closes the window
    (a replayed day of traffic is in the past); (None, None) when the log is empty and nothing was given."""
    if until is None:
        served = serving_log.read(settings.lake_path, since, None, columns=["served_at"])["served_at"]
        if served.empty:
            return since, None
        until = (pd.Timestamp(served.max()) + pd.Timedelta(milliseconds=1)).to_pydatetime()
    if since is None:
        since = until - timedelta(days=days)
    return since, until
