"""On-demand features, computed at request time (and at each training row's event time), so that
features relative to "now" are exact at any moment instead of frozen in a daily snapshot.

Feast stores each function's source and runs it on its own: a function may use only what it
imports inside itself.
"""

import pandas as pd
from feast.on_demand_feature_view import on_demand_feature_view
from feast.field import Field
from feast.types import Float64, Int64, String

from data_sources import request_context
from features import item_features, user_features

@on_demand_feature_view(
    sources=[request_context],
    schema=[
        Field(name="hour_of_day", dtype=Int64),
        Field(name="day_of_week", dtype=Int64),
        Field(name="is_weekend", dtype=Int64),
        Field(name="device_type", dtype=String),
    ],
    mode="pandas",
    tags={"default.hour_of_day": "12", "default.day_of_week": "0", "default.is_weekend": "0",
          "default.device_type": "other"},
)
def request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """Time of day and week of the request (UTC), and the client's device folded to a known set."""
    import pandas as pd

    devices = ("ios", "android", "web", "tv")
    when = pd.to_datetime(inputs["request_time"], utc=True)
    device = inputs["device"].fillna("").astype(str).str.lower()
    return pd.DataFrame({
        "hour_of_day": when.dt.hour.astype("int64"),
        "day_of_week": when.dt.dayofweek.astype("int64"),
        "is_weekend": (when.dt.dayofweek >= 5).astype("int64"),
        "device_type": device.where(device.isin(devices), "other"),
    })


@on_demand_feature_view(
    sources=[request_context, user_features, item_features],
    schema=[
        Field(name="days_since_last_interaction", dtype=Float64),
        Field(name="item_age_days", dtype=Float64),
        Field(name="user_category_affinity", dtype=Float64),
    ],
    mode="pandas",
    # On-demand fields cannot carry tags (Feast compares them with the inferred schema): defaults live here.
    tags={"default.days_since_last_interaction": "365", "default.item_age_days": "365",
          "default.user_category_affinity": "0"},
)
def user_item_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """Recency and age relative to the request, and the user's affinity for the item's category."""
    import pandas as pd

    def affinity(keys: object, values: object, category: object) -> float:
        if keys is None or values is None or category is None:
            return 0.0
        return float(dict(zip(list(keys), list(values))).get(category, 0.0))  # type: ignore[call-overload]

    when = pd.to_datetime(inputs["request_time"], utc=True)
    last = pd.to_datetime(inputs["last_interaction_at"], utc=True)
    seen = pd.to_datetime(inputs["first_seen_at"], utc=True)
    scores = [
        affinity(keys, values, category)
        for keys, values, category in zip(
            inputs["category_affinity_keys"], inputs["category_affinity_values"], inputs["category"]
        )
    ]
    return pd.DataFrame({
        "days_since_last_interaction": ((when - last).dt.total_seconds() / 86400).astype("float64"),
        "item_age_days": ((when - seen).dt.total_seconds() / 86400).astype("float64"),
        "user_category_affinity": pd.Series(scores, dtype="float64", index=inputs.index),
    })

