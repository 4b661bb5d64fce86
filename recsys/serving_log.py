"""The serving log: one record per answer of `GET /recommendations`, the source of every monitoring report.

A record is a JSON object (on the `serving-log` topic, keyed by user) and one row of :data:`SCHEMA` in the
lake, under ``lake/serving_log/date=YYYY-MM-DD/`` (the day it was served), written in parts that readers
deduplicate by ``request_id`` (delivery is at-least-once).

| column | what |
|---|---|
| `request_id` | the id the answer carries; clients send it back on `POST /interactions` |
| `served_at` | when the answer was made (the request's time for replays) |
| `user_id`, `variant`, `bucket` | who asked, and the experiment arm and bucket that user is in |
| `model_version` | the answer's model version (ranker, candidate artifact, or `popular`) |
| `candidates_version` | the candidate artifact loaded |
| `degradation`, `cached` | the rung and whether layer 1 answered |
| `latency_ms`, `stage_ms` | total and per stage (JSON object) |
| `item_ids`, `scores`, `sources`, `explanations` | the served list, rank order |
| `features` | sampled requests (`monitoring.feature_sample_rate`): the ranker's input, JSON |
|  | `{column: [value per ranked candidate]}` with `user_id`/`item_id` columns; null otherwise |
"""

from __future__ import annotations

import json
import math
import uuid
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

FOLDER = "serving_log"
SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("served_at", pa.timestamp("ms", tz="UTC")),
    ("user_id", pa.string()),
    ("variant", pa.string()),
    ("bucket", pa.int32()),
    ("model_version", pa.string()),
    ("candidates_version", pa.string()),
    ("degradation", pa.string()),
    ("cached", pa.bool_()),
    ("latency_ms", pa.float64()),
    ("stage_ms", pa.string()),
    ("item_ids", pa.list_(pa.string())),
    ("scores", pa.list_(pa.float64())),
    ("sources", pa.list_(pa.string())),
    ("explanations", pa.list_(pa.string())),
    ("features", pa.string()),
])
COLUMNS = tuple(SCHEMA.names)


def new_request_id() -> str:
    return uuid.uuid4().hex


def sampled(request_id: str, rate: float) -> bool:
    """Whether this request's features are logged: a stable draw from the id, so replays agree."""
    return rate > 0 and (zlib.crc32(request_id.encode()) % 1_000_000) < rate * 1_000_000


def features_json(features: Mapping[str, list[Any]]) -> str:
    """The ranker's input columns as JSON; NaN and infinities become null, numpy scalars plain numbers."""
    def plain(value: Any) -> Any:
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    return json.dumps({name: [plain(v) for v in values] for name, values in features.items()},
                      separators=(",", ":"), default=str)


def decode(value: bytes) -> dict[str, Any]:
    """A record from its wire bytes; raises ValueError when it is not a serving-log record."""
    record = json.loads(value)
    if not isinstance(record, dict) or not isinstance(record.get("request_id"), str):
        raise ValueError("not a serving-log record: no request_id")
    return record


def to_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Records (as the API publishes them, `served_at` in epoch milliseconds) as an Arrow table of SCHEMA."""
    rows = list(records)
    columns: dict[str, Any] = {name: [r.get(name) for r in rows] for name in COLUMNS}
    # Whole columns, not a value at a time: the API's log thread runs this every second while requests wait
    # for the interpreter.
    columns["served_at"] = pa.array(columns["served_at"], pa.int64()).cast(SCHEMA.field("served_at").type)
    columns["stage_ms"] = [v if isinstance(v, str) or v is None else json.dumps(v) for v in columns["stage_ms"]]
    return pa.table(columns, schema=SCHEMA)


def write(lake_root: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Append records to the lake, one new part file per serving day; returns the count written."""
    table = to_table(records)
    if table.num_rows == 0:
        return 0
    days = pc.strftime(table.column("served_at"), format="%Y-%m-%d")
    for day in sorted(set(days.unique().to_pylist())):
        part = table.filter(pc.equal(days, day))
        folder = Path(lake_root) / FOLDER / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        temporary = folder / f".{name}.tmp"
        pq.write_table(part, temporary, compression="zstd")
        temporary.replace(folder / name)  # readers never see a half-written part
    return table.num_rows


def read(lake_root: Path, since: datetime | None = None, until: datetime | None = None,
         columns: list[str] | None = None) -> pd.DataFrame:
    """The log between `since` (inclusive) and `until` (exclusive), one row per request_id, oldest first."""
    folder = Path(lake_root) / FOLDER
    wanted = list(columns) if columns is not None else list(COLUMNS)
    for needed in ("request_id", "served_at"):
        if needed not in wanted:
            wanted.append(needed)
    if not folder.exists() or not any(folder.rglob("*.parquet")):
        return SCHEMA.empty_table().select(wanted).to_pandas()
    dataset = ds.dataset(folder, format="parquet", schema=SCHEMA, partitioning=None,
                         exclude_invalid_files=True, ignore_prefixes=[".", "_"])
    condition = None
    if since is not None:
        condition = ds.field("served_at") >= pa.scalar(pd.Timestamp(since), type=SCHEMA.field("served_at").type)
    if until is not None:
        bound = ds.field("served_at") < pa.scalar(pd.Timestamp(until), type=SCHEMA.field("served_at").type)
        condition = bound if condition is None else condition & bound
    frame = dataset.to_table(columns=wanted, filter=condition).to_pandas()
    return frame.drop_duplicates("request_id").sort_values("served_at", kind="stable").reset_index(drop=True)
