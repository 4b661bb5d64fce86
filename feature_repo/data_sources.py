"""Data sources: the Parquet feature tables the Spark job writes, a push source and request context.

Paths are relative to this repository; `recsys build-features` writes them under `data/features/`.
"""

from datetime import timedelta

from feast import FileSource, PushSource, RequestSource
from feast.data_format import ParquetFormat
from feast.field import Field
from feast.types import String, UnixTimestamp

FEATURES = "data/features"


def feature_table(name: str, description: str) -> FileSource:
    return FileSource(
        name=f"{name}_source", path=f"{FEATURES}/{name}", file_format=ParquetFormat(),
        timestamp_field="event_timestamp", created_timestamp_column="created_timestamp",
        description=description,
    )


user_features_source = feature_table("user_features", "Daily point-in-time snapshots of user aggregates.")
item_features_source = feature_table("item_features", "Daily point-in-time snapshots of item aggregates.")
item_cooccurrence_source = feature_table("item_cooccurrence", "Items co-interacted in sessions, latest snapshot.")
user_realtime_batch = feature_table("user_realtime", "History of the real-time user signals pushed online.")

#: The event consumer pushes each user's latest signals here (FeatureStore.push).
user_realtime_push = PushSource(name="user_realtime_push", batch_source=user_realtime_batch)

#: Context the client sends with a request: when it is asked, and from which device.
request_context = RequestSource(
    name="request_context",
    schema=[Field(name="request_time", dtype=UnixTimestamp), Field(name="device", dtype=String)],
    description="Time of the request (the event time, for training rows) and the client's device.",
)

#: Online rows older than this are reported stale; offline joins ignore older snapshots.
SNAPSHOT_TTL = timedelta(days=365)
