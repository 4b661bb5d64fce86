"""Materialization: the latest value of every entity, from the feature tables to the online store.

Incremental like `feast materialize-incremental`: each view starts where its last run ended
(recorded in the Feast registry, so Feast's own commands see it too) or one TTL back. The rows go
through the fast online writer (`recsys.features.writer`).
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

from recsys.features.writer import write_rows

__all__ = ["MaterializeReport", "latest_rows", "materialize", "write_rows"]


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


