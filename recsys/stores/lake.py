"""The Parquet lake: interactions partitioned by event date, and catalog snapshots.

Layout (hive-style, readable by Spark, Feast file sources and pyarrow)::

    interactions/event_date=YYYY-MM-DD/part-0.parquet   one file per day, unique by event_id
    catalog/<name>/snapshot=YYYYMMDDTHHMMSSZ/<name>.parquet   written only when the content changed

Every file is written to a temporary name and renamed into place, so a reader never sees half a file.
Merging into a day file is a read-merge-write under an exclusive lock on that day (`.lock` beside it, an
`fcntl` lock held by the writing process): writers in several processes (the import, the streaming lake
writer's group members) never overwrite each other's events.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from recsys.events import INTERACTION_SCHEMA, to_arrow

PARTITION = "event_date"
ACTIVITY_BATCH_ROWS = 1 << 20  # rows of interactions aggregated at a time by `Lake.item_activity`
ACTIVITY_PARTS_MERGED = 16  # partial aggregates kept before they are merged into one


@dataclass(frozen=True)
class ItemActivity:
    """What the lake's interactions say per item: events (most first; ties by item id), the first event's time,
    the newest event of all, and the events (item_id, event_time) of the recent window before it."""

    counts: pd.Series  # item_id -> events
    first_seen: pd.Series  # item_id -> first event time (UTC)
    newest: pd.Timestamp | None
    recent: pd.DataFrame  # item_id, event_time

    @classmethod
    def empty(cls) -> ItemActivity:
        return cls(pd.Series(dtype="int64", name="count"), pd.Series(dtype="datetime64[ms, UTC]", name="first_seen"),
                   None, pd.DataFrame({"item_id": pd.Series(dtype=str),
                                       "event_time": pd.Series(dtype="datetime64[ms, UTC]")}))


class Lake:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.interactions_path = root / "interactions"
        self.catalog_path = root / "catalog"

    # -- interactions -----------------------------------------------------------------------
    def write_interactions(self, events: pd.DataFrame) -> int:
        """Merge events into their day partitions; returns how many were new."""
        table = to_arrow(events)
        days = pc.strftime(table["event_time"], format="%Y-%m-%d")
        added = 0
        for day in pc.unique(days).to_pylist():
            added += self._merge_day(day, table.filter(pc.equal(days, day)))
        return added

    def _merge_day(self, day: str, new: pa.Table) -> int:
        target = self.interactions_path / f"{PARTITION}={day}" / "part-0.parquet"
        new = _unique_events(new)
        with _locked(target.parent):
            return self._merge_locked(target, new)

    def _merge_locked(self, target: Path, new: pa.Table) -> int:
        if target.exists():
            old = pq.read_table(target, schema=INTERACTION_SCHEMA)
            fresh = new.filter(pc.invert(pc.is_in(new["event_id"], value_set=old["event_id"])))
            if fresh.num_rows == 0:
                return 0
            merged = pa.concat_tables([old, fresh])
        else:
            fresh = merged = new
        merged = merged.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
        atomic_write(merged, target)
        return fresh.num_rows

    def interactions(self, filter: pc.Expression | None = None, columns: list[str] | None = None) -> pa.Table:
        if not self.interactions_path.exists():
            return INTERACTION_SCHEMA.empty_table()
        return self._interactions_dataset().to_table(filter=filter, columns=columns)

    def item_activity(self, recent_days: float) -> ItemActivity:
        """Per-item aggregates of every interaction, read in batches: memory follows the catalog, not the number of
        interactions (what a serving process needs at start-up: popularity, first sightings, the recent window)."""
        if not self.interactions_path.exists():
            return ItemActivity.empty()
        dataset = self._interactions_dataset()
        parts: list[pa.Table] = []
        for batch in dataset.to_batches(columns=["item_id", "event_time"], batch_size=ACTIVITY_BATCH_ROWS):
            if batch.num_rows:
                parts.append(_item_totals(pa.Table.from_batches([batch])))
            if len(parts) >= ACTIVITY_PARTS_MERGED:  # keep the partial aggregates bounded too
                parts = [_merge_totals(parts)]
        if not parts:
            return ItemActivity.empty()
        totals = _merge_totals(parts).to_pandas()
        totals = totals.sort_values(["count", "item_id"], ascending=[False, True], kind="stable")
        newest = pd.Timestamp(totals["last"].max())
        since = pa.scalar((newest - pd.Timedelta(days=recent_days)).to_pydatetime(),
                          INTERACTION_SCHEMA.field("event_time").type)
        recent = dataset.to_table(columns=["item_id", "event_time"], filter=ds.field("event_time") >= since)
        activity = ItemActivity(counts=pd.Series(totals["count"].to_numpy(), index=totals["item_id"].to_numpy(),
                                             name="count"),
                            first_seen=pd.Series(totals["first"].to_numpy(), index=totals["item_id"].to_numpy(),
                                                 name="first_seen"),
                            newest=newest, recent=recent.to_pandas())
        pa.default_memory_pool().release_unused()  # the batches' buffers back to the system, not kept for reuse
        return activity

    def _interactions_dataset(self) -> ds.Dataset:
        return ds.dataset(self.interactions_path, format="parquet", partitioning="hive",
                          schema=INTERACTION_SCHEMA.append(pa.field(PARTITION, pa.string())))

    def count_interactions(self) -> int:
        if not self.interactions_path.exists():
            return 0
        return ds.dataset(self.interactions_path, format="parquet", partitioning="hive").count_rows()

    # -- catalog snapshots ----------------------------------------------------------------------
    def write_snapshot(self, name: str, frame: pd.DataFrame, now: datetime | None = None) -> bool:
        """Write a new snapshot of a catalog table unless the latest one has the same content."""
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        digest = _digest(table)
        latest = self._latest_snapshot_dir(name)
        if latest is not None and (latest / "_digest").read_text() == digest:
            return False
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.catalog_path / name / f"snapshot={stamp}"
        atomic_write(table, target / f"{name}.parquet")
        (target / "_digest").write_text(digest)
        return True

    def latest_snapshot(self, name: str) -> pd.DataFrame | None:
        latest = self._latest_snapshot_dir(name)
        return None if latest is None else pq.read_table(latest / f"{name}.parquet").to_pandas()

    def snapshot_version(self, name: str) -> str | None:
        """The latest complete snapshot of a catalog table as `<folder>:<content digest>` (None: none yet): it
        changes exactly when `latest_snapshot` would return other content."""
        latest = self._latest_snapshot_dir(name)
        return None if latest is None else f"{latest.name}:{(latest / '_digest').read_text()}"

    def _latest_snapshot_dir(self, name: str) -> Path | None:
        folder = self.catalog_path / name
        done = sorted(p for p in folder.glob("snapshot=*") if (p / "_digest").exists()) if folder.exists() else []
        return done[-1] if done else None


def _item_totals(table: pa.Table) -> pa.Table:
    """item_id, count, first, last of a batch of (item_id, event_time)."""
    grouped = table.group_by("item_id").aggregate([("item_id", "count"), ("event_time", "min"),
                                                    ("event_time", "max")])
    return grouped.rename_columns({"item_id_count": "count", "event_time_min": "first", "event_time_max": "last"})


def _merge_totals(parts: list[pa.Table]) -> pa.Table:
    grouped = pa.concat_tables(parts).group_by("item_id").aggregate([("count", "sum"), ("first", "min"),
                                                                      ("last", "max")])
    return grouped.rename_columns({"count_sum": "count", "first_min": "first", "last_max": "last"})


def _unique_events(table: pa.Table) -> pa.Table:
    """Keep the first row of each event_id within one batch."""
    if table.num_rows == pc.count_distinct(table["event_id"]).as_py():
        return table
    indexed = table.append_column("_row", pa.array(range(table.num_rows)))
    first = indexed.group_by("event_id").aggregate([("_row", "min")])["_row_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` (created if missing), across threads and processes of this machine."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(table: pa.Table, target: Path) -> None:
    """Write `table` to `target` as Parquet (zstd) through a temporary file: readers see the old or the new."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, target)


def _digest(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="none")
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
