"""Feature views. A field's `default` tag is the typed value used when it is missing: one
definition for training and serving (recsys.features.defaults reads it from here)."""

from datetime import timedelta

from feast import FeatureView
from feast.field import Field
from feast.types import Array, Float32, Float64, Int64, String, UnixTimestamp

from data_sources import (
    SNAPSHOT_TTL, item_cooccurrence_source, item_features_source, user_features_source, user_realtime_push,
)
from entities import item, user


def f(name: str, dtype: object, default: str | None = None, description: str = "") -> Field:
    return Field(name=name, dtype=dtype, description=description,  # type: ignore[arg-type]
                 tags={"default": default} if default is not None else None)


user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=[
        f("interactions_total", Int64, "0"),
        f("views_total", Int64, "0"),
        f("clicks_total", Int64, "0"),
        f("purchases_total", Int64, "0"),
        f("rates_total", Int64, "0"),
        f("tags_total", Int64, "0"),
        f("interactions_7d", Int64, "0"),
        f("interactions_30d", Int64, "0"),
        f("avg_rating_given", Float64, "3.5", "mean rating the user gives"),
        f("first_interaction_at", UnixTimestamp),
        f("last_interaction_at", UnixTimestamp),
        f("sessions_total", Int64, "0"),
        f("sessions_per_week", Float64, "0"),
        f("avg_session_events", Float64, "0"),
        f("avg_session_minutes", Float64, "0"),
        f("preferred_hour", Int64, "20", "UTC hour with most of the user's events"),
        f("top_categories", String, ""),
        f("category_affinity_keys", Array(String)),
        f("category_affinity_values", Array(Float32)),
        f("engagement_level", String, "low"),
    ],
    source=user_features_source,
    online=True,
    description="User aggregations over the whole history, as of each day they changed.",
)

item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=SNAPSHOT_TTL,
    schema=[
        f("category", String, "unknown"),
        f("interactions_total", Int64, "0"),
        f("interactions_7d", Int64, "0"),
        f("interactions_30d", Int64, "0"),
        f("views_total", Int64, "0"),
        f("clicks_total", Int64, "0"),
        f("purchases_total", Int64, "0"),
        f("rating_count", Int64, "0"),
        f("avg_rating", Float64, "3.5"),
        f("click_rate", Float64, "0"),
        f("purchase_rate", Float64, "0"),
        f("first_seen_at", UnixTimestamp),
        f("category_popularity_rank", Int64, "1000000"),
    ],
    source=item_features_source,
    online=True,
    description="Item aggregations, as of each day they changed.",
)

item_cooccurrence = FeatureView(
    name="item_cooccurrence",
    entities=[item],
    ttl=timedelta(days=30),
    schema=[f("neighbours", Array(String)), f("neighbour_scores", Array(Float32))],
    source=item_cooccurrence_source,
    online=True,
    description="Top items co-interacted with this one in sessions (cosine), for candidate generation.",
)

user_realtime = FeatureView(
    name="user_realtime",
    entities=[user],
    ttl=timedelta(days=1),
    schema=[
        *(f(f"events_{w}", Int64, "0", f"interactions in the last {w}") for w in ("1h", "1d")),
        *(f(f"{a}_{w}", Int64, "0", f"{a} events in the last {w}")
          for a in ("view", "click", "add_to_cart", "purchase", "rate") for w in ("1h", "1d")),
        f("last_items", Array(String), None, "the last 10 distinct items, newest first"),
        f("last_categories", Array(String), None, "distinct categories of last_items, newest first (5)"),
        f("session_events", Int64, "0", "events of the open session (30 minutes of inactivity close it)"),
        f("session_started_at", UnixTimestamp),
        f("last_event_at", UnixTimestamp),
        f("last_item_id", String, ""),
        f("last_action", String, ""),
    ],
    source=user_realtime_push,
    online=True,
    tags={"event_driven": "true"},  # no row = no event in the last day: defaults, not staleness
    description="The user's last day as of their newest event: pushed by the feature updater within a second "
                "of each event; the same definition over the lake gives the offline history "
                "(recsys.features.realtime).",
)
