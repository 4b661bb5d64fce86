"""Request-time twins of the on-demand feature views in feature_repo/on_demand.py, without pandas.

Feast runs an on-demand view's pandas function over a frame of the request's rows: for one user and
~1,000 candidates that is a DataFrame, datetime parsing and string methods per request, most of the
features stage's time. The serving path calls these twins instead: the user's and the request's inputs
are one value each, the items' are arrays, and each output is computed once per distinct input.

The definitions stay in feature_repo/ (training runs them through Feast's point-in-time join); a twin
must give exactly their values, and tests/features/test_on_demand.py holds every twin to its
definition over planted edge cases (missing rows, naive and aware times, unknown devices and categories).
A view without a twin runs its own function (`FastOnlineFeatures._on_demand`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

#: What a twin reads: the request's fields and the user-side inputs (one value each), the item-side inputs
#: (one list per feature, a value per candidate) and the number of candidates; it returns a column per
#: output feature: a list of n values (None where the definition gives NaN), or one value for all n.
Twin = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Sequence[Any]], int], dict[str, Any]]

DEVICES = ("ios", "android", "web", "tv")
DAY = 86_400.0
NANOS = 1_000_000_000


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def epoch_ns(value: Any) -> int | None:
    """A timestamp as integer epoch nanoseconds, naive ones read as UTC (`pd.to_datetime(..., utc=True)`);
    None when absent. Integers, so that differences are exact, as in pandas."""
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return None if value is pd.NaT else int((value.tz_localize("UTC") if value.tzinfo is None else value).value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - EPOCH) // MICROSECOND * 1000
    return epoch_ns(pd.Timestamp(value))


def epoch_column(values: Sequence[Any]) -> np.ma.MaskedArray:
    """`epoch_ns` of every value as a masked int64 array (masked where absent)."""
    stamps = [epoch_ns(v) for v in values]
    absent = np.fromiter((s is None for s in stamps), dtype=bool, count=len(stamps))
    return np.ma.masked_array(np.fromiter((0 if s is None else s for s in stamps), dtype=np.int64,
                                          count=len(stamps)), mask=absent)


def _days(when: int | None, then: int | None) -> float | None:
    """pandas' `(when - then).dt.total_seconds() / 86400` for one pair (int64 nanoseconds to float, / 1e9)."""
    return None if when is None or then is None else float(when - then) / NANOS / DAY


def request_features(request: Mapping[str, Any], user: Mapping[str, Any], items: Mapping[str, Sequence[Any]],
                     n: int) -> dict[str, Any]:
    """feature_repo/on_demand.py `request_features`: hour, weekday (Monday 0), weekend, device folded."""
    stamp = pd.Timestamp(request.get("request_time"))
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    device = request.get("device")
    device = "" if device is None or device != device else str(device).lower()
    return {"hour_of_day": int(stamp.hour), "day_of_week": int(stamp.dayofweek),
            "is_weekend": int(stamp.dayofweek >= 5), "device_type": device if device in DEVICES else "other"}


def user_item_features(request: Mapping[str, Any], user: Mapping[str, Any], items: Mapping[str, Sequence[Any]],
                       n: int) -> dict[str, Any]:
    """feature_repo/on_demand.py `user_item_features`: days since the user's last event, item age, and the
    user's affinity for each item's category."""
    when = epoch_ns(request.get("request_time"))
    last = epoch_ns(user.get("last_interaction_at"))
    seen = items.get("first_seen_at")
    seen_ns = seen if isinstance(seen, np.ma.MaskedArray) else epoch_column(seen if seen is not None else [None] * n)
    if when is None:
        ages: list[Any] = [None] * n
    else:  # as pandas: nanoseconds as int64, to float, / 1e9, / 86400
        days = (when - seen_ns.data) / NANOS / DAY
        ages = [None if absent else d for d, absent in zip(days.tolist(), np.ma.getmaskarray(seen_ns).tolist())]
    keys, values = user.get("category_affinity_keys"), user.get("category_affinity_values")
    categories = items.get("category")
    if keys is None or values is None or categories is None:
        affinity = [0.0] * n
    else:
        table = dict(zip(list(keys), list(values)))
        affinity = [0.0 if c is None else float(table.get(c, 0.0)) for c in categories]
    return {"days_since_last_interaction": _days(when, last), "item_age_days": ages,
            "user_category_affinity": affinity}


#: The twin of each on-demand view, by the view's name.
TWINS: dict[str, Twin] = {"request_features": request_features, "user_item_features": user_item_features}
