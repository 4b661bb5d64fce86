"""The offline history of the `user_realtime` features: `realtime_history` over the lake, one row per user
and event time, written where the view's batch source reads (`data/features/user_realtime`), so that
training joins point in time the values the feature updater pushed online at each moment.

Incremental: the table is one Parquet file per event day, and a row depends only on the user's events in the
`KEEP_MS` (one day) before it, so a build recomputes only the days whose lake partition changed since the last
build (with the day after each, whose rows read back into it) and the day that held the previous `as_of`. A new
catalog snapshot (categories feed `last_categories`), a table in another layout, or `full=True` rebuilds every
day. What was built from what is kept beside the table (`RECORD`).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from recsys.features.realtime import SCHEMA, realtime_history, to_arrow
from recsys.stores.activity import KEEP_MS
from recsys.stores.lake import PARTITION, Lake, atomic_write
from recsys.streaming.features import item_categories

TABLE = "user_realtime"
RECORD = f".{TABLE}.json"  # beside the table: what its day files were built from
LOOKBACK_DAYS = -(-KEEP_MS // 86_400_000)  # days before a day whose events its rows read
_EVENT_COLUMNS = ["event_id", "user_id", "item_id", "event_time", "action_type"]


def write_realtime_table(lake: Lake, output: Path, as_of: datetime | None = None, full: bool = False) -> int:
    """Bring `output/user_realtime` up to date with the lake (events up to `as_of`); returns the rows written
    (those of the days rebuilt)."""
    target, record = output / TABLE, output / RECORD
    days = _lake_days(lake)
    built = _read_record(record, target)
    cut = as_of.isoformat() if as_of else None
    state: dict[str, Any] = {"catalog": lake.snapshot_version("items"), "as_of": cut, "days": days}
    rebuild = full or built is None or built.get("catalog") != state["catalog"]
    folder = target.with_name(f".{TABLE}.{os.getpid()}.tmp") if rebuild else target  # a rebuild swaps in whole
    if built is None or rebuild:
        todo = set(days)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    else:
        todo = {day for day, print_ in days.items() if built["days"].get(day) != print_
                or not (target / _file(day)).is_file()}
        todo |= {_shift(day, k) for day in set(todo) for k in range(1, LOOKBACK_DAYS + 1)} & days.keys()
        if built.get("as_of") != cut:  # the day the old cut fell in, and any after it, change
            cuts = [datetime.fromisoformat(v).date().isoformat() for v in (built.get("as_of"), cut) if v]
            todo |= {day for day in days if not cuts or day >= min(cuts)}
        for gone in set(built["days"]) - days.keys():
            (target / _file(gone)).unlink(missing_ok=True)
    written = 0
    if todo:
        history = _history(lake, sorted(todo), as_of)
        event_days = pc.strftime(history.column("event_timestamp"), format="%Y-%m-%d") if history.num_rows else None
        for day in sorted(todo):
            rows = history.filter(pc.equal(event_days, day)) if event_days is not None else SCHEMA.empty_table()
            if rows.num_rows:
                atomic_write(rows, folder / _file(day))
            else:
                (folder / _file(day)).unlink(missing_ok=True)
            written += rows.num_rows
    if rebuild:
        _swap(folder, target)
    target.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")  # last: a crash before it rebuilds again
    return written


def _history(lake: Lake, days: list[str], as_of: datetime | None) -> pa.Table:
    """The feature rows of events on `days`, computed over those days and the LOOKBACK_DAYS before each."""
    read = sorted({_shift(day, -k) for day in days for k in range(LOOKBACK_DAYS + 1)})
    events = lake.interactions(filter=ds.field(PARTITION).isin(read), columns=_EVENT_COLUMNS).to_pandas()
    if as_of is not None:
        events = events[events["event_time"] <= pd.Timestamp(as_of)]
    history = realtime_history(events, item_categories(lake))
    history["created_timestamp"] = history["event_timestamp"]
    table = to_arrow(history)
    wanted = pa.array(days)
    return table.filter(pc.is_in(pc.strftime(table.column("event_timestamp"), format="%Y-%m-%d"), value_set=wanted))


def _lake_days(lake: Lake) -> dict[str, str]:
    """Each interaction day in the lake and a fingerprint of its partition's files (size, modification time)."""
    days = {}
    for folder in sorted(lake.interactions_path.glob(f"{PARTITION}=*")) if lake.interactions_path.exists() else []:
        files = sorted(p for p in folder.glob("*.parquet"))
        if files:
            days[folder.name.split("=", 1)[1]] = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                                          for p in files)
    return days


def _read_record(record: Path, target: Path) -> dict[str, Any] | None:
    """The last build's record, or None when the table is missing, in another layout, or unrecorded."""
    if not record.is_file() or not target.is_dir() or (target / "part-0.parquet").exists():
        return None
    try:
        built = json.loads(record.read_text())
    except ValueError:
        return None
    return built if isinstance(built, dict) and isinstance(built.get("days"), dict) else None


def _file(day: str) -> str:
    return f"day-{day}.parquet"


def _shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def _swap(folder: Path, target: Path) -> None:
    """`folder` becomes `target` (the old one moved aside first, then deleted)."""
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(folder, target)
    shutil.rmtree(old, ignore_errors=True)
