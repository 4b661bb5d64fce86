"""Materialization: the latest value of every entity, from the feature tables to the online store.

Incremental like `feast materialize-incremental`: each view starts where its last run ended
(recorded in the Feast registry, so Feast's own commands see it too) or one TTL back. On Redis the
rows are encoded a column at a time and written with pipelined HSETs in Feast's exact layout; other
online stores go through Feast's provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import FeatureStore, FeatureView
from feast.infra.offline_stores.file_source import FileSource

from recsys.features.encoding import encode_column, entity_keys, fixed_width_rows, timestamps
from recsys.features.resp import RespConnection, bulk
from recsys.private.feast import convert_arrow_to_proto, mmh3

BATCH_ROWS = 5_000


@dataclass(frozen=True)
class MaterializeReport:
    view: str
    rows: int
    seconds: float
    start: datetime
    end: datetime

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def materialize(
    store: FeatureStore, end: datetime | None = None, views: list[str] | None = None,
    progress: Callable[[str], None] = lambda message: None, start: datetime | None = None,
) -> list[MaterializeReport]:
    """Write each online view's latest rows in (last end, end] to the online store; with ``start``, in
    (start, end] (a backfill: every entity's newest row since then, however old; the online read path
    still reports rows past their TTL as stale at request time)."""
    end = end or datetime.now(UTC)
    reports = []
    for view in store.list_feature_views():
        if not view.online or (views is not None and view.name not in views):
            continue
        started = time.perf_counter()
        since = start or _start(view, end)
        table = latest_rows(store, view, since, end)
        write_rows(store, view, table)
        store.registry.apply_materialization(view, store.project, since, end)
        report = MaterializeReport(view.name, table.num_rows, time.perf_counter() - started, since, end)
        progress(f"{view.name}: {report.rows:,} rows in {report.seconds:.2f}s")
        reports.append(report)
    return reports


def _start(view: FeatureView, end: datetime) -> datetime:
    if view.materialization_intervals:
        return max(interval[1] for interval in view.materialization_intervals)
    return end - view.ttl if view.ttl else datetime(1970, 1, 1, tzinfo=UTC)


def latest_rows(store: FeatureStore, view: FeatureView, start: datetime, end: datetime) -> pa.Table:
    """The newest row per entity with start < event_timestamp <= end (created time breaks ties)."""
    source = view.batch_source
    if not isinstance(source, FileSource):
        raise TypeError(f"{view.name}: only Parquet file sources can be materialized, got {type(source).__name__}")
    path = FileSource.get_uri_for_file_path(store.repo_path, source.path)
    keys = [column.name for column in view.entity_columns]
    ts, created = source.timestamp_field, source.created_timestamp_column
    try:
        dataset = ds.dataset(path, format="parquet")
    except FileNotFoundError:
        return pa.table({})
    window = (pc.field(ts) > pa.scalar(start, pa.timestamp("us", tz="UTC"))) & (
        pc.field(ts) <= pa.scalar(end, pa.timestamp("us", tz="UTC"))
    )
    columns = keys + [f.name for f in view.features] + [ts] + ([created] if created else [])
    table = dataset.to_table(filter=window, columns=columns)
    if table.num_rows == 0:
        return table
    order = [(k, "ascending") for k in keys] + [(ts, "descending")] + ([(created, "descending")] if created else [])
    table = table.sort_by(order)
    rows = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = rows.group_by(keys, use_threads=False).aggregate([("_row", "min")])["_row_min"]
    return table.take(pc.take(first, pc.sort_indices(first))).combine_chunks()


def write_rows(store: FeatureStore, view: FeatureView, table: pa.Table) -> None:
    if table.num_rows == 0:
        return
    if store.config.online_store.type == "redis":
        _write_redis(store, view, table)
        return
    provider = store._get_provider()
    join_keys = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
    for start in range(0, table.num_rows, BATCH_ROWS):
        rows = convert_arrow_to_proto(table.slice(start, BATCH_ROWS), view, join_keys)
        provider.online_write_batch(store.config, view, rows, progress=None)


def _write_redis(store: FeatureStore, view: FeatureView, table: pa.Table) -> None:
    """HSET key {mmh3(view:feature): value, _ts:view: timestamp}, exactly as Feast's Redis store writes."""
    host, port, db = _redis_address(store.config.online_store.connection_string)
    suffix = store.project.encode("utf-8")
    version = store.config.entity_key_serialization_version
    fields = [bulk(mmh3(f"{view.name}:{feature.name}")) for feature in view.features]
    ts_field = bulk(f"_ts:{view.name}".encode())
    types = [(f.name, f.dtype.to_value_type()) for f in view.features]
    connection = RespConnection(host, port, db)
    try:
        for start in range(0, table.num_rows, BATCH_ROWS):
            batch = table.slice(start, BATCH_ROWS)
            keys = entity_keys(view, batch, version)
            stamps = [ts_field + bulk(s) for s in timestamps(batch.column(_timestamp_field(view)))]
            fixed: list[bytes | None] = fixed_width_rows(batch, types, fields) or [None] * batch.num_rows
            columns: list[list[bytes]] | None = None
            rows = []
            for row, (key, stamp, payload) in enumerate(zip(keys, stamps, fixed)):
                if payload is None:  # a null value, or not all floats: encode this row value by value
                    columns = columns or [[bulk(v) for v in encode_column(batch.column(n), t)] for n, t in types]
                    payload = b"".join(part for pair in zip(fields, (c[row] for c in columns)) for part in pair)
                rows.append((key + suffix, 2 * len(fields) + 2, payload + stamp))
            connection.hset_many(rows)
    finally:
        connection.close()


def _redis_address(connection_string: str) -> tuple[str, int, int]:
    """host, port and db from Feast's "host:port,db=N,..." connection string."""
    address, *options = connection_string.split(",")
    host, _, port = address.partition(":")
    settings = dict(option.split("=", 1) for option in options if "=" in option)
    return host, int(port or 6379), int(settings.get("db", 0))


def _timestamp_field(view: FeatureView) -> str:
    if view.batch_source is None:
        raise TypeError(f"{view.name} has no batch source")
    return view.batch_source.timestamp_field
