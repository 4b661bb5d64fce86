"""The offline history of the `user_realtime` features: `realtime_history` over the lake, one row per user
and event time, written where the view's batch source reads (`data/features/user_realtime`), so that
training joins point in time the values the feature updater pushed online at each moment."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from recsys.features.realtime import realtime_history, to_arrow
from recsys.stores.lake import Lake
from recsys.streaming.features import item_categories

TABLE = "user_realtime"
def write_realtime_table(lake: Lake, output: Path, as_of: datetime | None = None) -> int:
    """Rebuild `output/user_realtime` from the lake (events up to `as_of`); returns the rows written."""
    events = lake.interactions(columns=["event_id", "user_id", "item_id", "event_time", "action_type"]).to_pandas()
    if as_of is not None:
        events = events[events["event_time"] <= pd.Timestamp(as_of)]
    history = realtime_history(events, item_categories(lake))
    history["created_timestamp"] = history["event_timestamp"]
    table = to_arrow(history)
    target = output / TABLE
    tmp = target.with_name(f".{TABLE}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(table, tmp / "part-0.parquet", compression="zstd")
    old = target.with_name(f".{TABLE}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return table.num_rows
