"""Small hand-made feature tables with exactly the columns the Spark job writes.

The tables have exactly the columns the Spark job writes, so the feature store, materialization,
the fast online path and training sets are tested without running Spark; the Spark job has its
own tests.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from recsys.features.realtime import INT_FEATURES
from recsys.settings import Settings

T0 = datetime(2024, 3, 1, tzinfo=UTC)
CREATED = datetime(2024, 6, 1, tzinfo=UTC)


def user_rows(user_id: str, day: datetime, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "user_id": user_id, "event_timestamp": day, "created_timestamp": CREATED,
        "interactions_total": 10, "views_total": 6, "clicks_total": 2, "purchases_total": 1, "rates_total": 1,
        "tags_total": 0, "interactions_7d": 3, "interactions_30d": 8, "avg_rating_given": 4.0,
        "first_interaction_at": T0 - timedelta(days=40), "last_interaction_at": day - timedelta(hours=3),
        "sessions_total": 4, "sessions_per_week": 0.7, "avg_session_events": 2.5, "avg_session_minutes": 12.0,
        "preferred_hour": 21, "top_categories": "Drama|Comedy",
        "category_affinity_keys": ["Drama", "Comedy"], "category_affinity_values": [0.75, 0.25],
        "engagement_level": "medium",
    }
    row.update(values)
    return row


def item_rows(item_id: str, day: datetime, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "item_id": item_id, "event_timestamp": day, "created_timestamp": CREATED, "category": "Drama",
        "interactions_total": 50, "interactions_7d": 5, "interactions_30d": 20, "views_total": 30,
        "clicks_total": 10, "purchases_total": 2, "rating_count": 8, "avg_rating": 3.9, "click_rate": 1 / 3,
        "purchase_rate": 1 / 15, "first_seen_at": T0 - timedelta(days=100), "category_popularity_rank": 3,
    }
    row.update(values)
    return row


def write_table(settings: Settings, name: str, rows: list[dict[str, object]]) -> Path:
    folder = settings.feature_data_path / name
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column.endswith(("_at", "timestamp")):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    if "category_affinity_values" in frame:
        frame["category_affinity_values"] = frame["category_affinity_values"].map(
            lambda v: None if v is None else [float(x) for x in v])
    frame.to_parquet(folder / f"part-{uuid.uuid4().hex[:6]}.parquet", index=False)
    return folder


def write_empty_extras(settings: Settings) -> None:
    """Co-occurrence and real-time tables, so every source exists."""
    write_table(settings, "item_cooccurrence", [{
        "item_id": "i1", "event_timestamp": T0, "created_timestamp": CREATED,
        "neighbours": ["i2"], "neighbour_scores": [0.5],
    }])
    write_table(settings, "user_realtime", [{
        "user_id": "u1", "event_timestamp": T0, "created_timestamp": CREATED,
        **{name: 1 if name in ("events_1h", "events_1d", "view_1h", "view_1d", "session_events") else 0
           for name in INT_FEATURES},
        "last_items": ["i1"], "last_categories": ["c1"], "session_started_at": T0, "last_event_at": T0,
        "last_item_id": "i1", "last_action": "view",
    }])
