"""The Parquet lake: day partitions unique by event_id, snapshots only on change."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from recsys.events import INTERACTION_COLUMNS
from recsys.stores import Lake


def frame(ids: list[str], days: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": ids, "user_id": "u1", "item_id": "i1",
        "event_time": pd.to_datetime(days, utc=True), "action_type": "view",
        "value": None, "session_id": None, "context": None,
    })[list(INTERACTION_COLUMNS)]


def test_events_land_in_their_day_and_merge_without_duplicates(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    assert lake.write_interactions(frame(["a", "b", "a"], ["2024-01-01T23:59:59Z", "2024-01-02T00:00:00Z",
                                                            "2024-01-01T23:59:59Z"])) == 2
    assert lake.write_interactions(frame(["b", "c"], ["2024-01-02T00:00:00Z", "2024-01-02T05:00:00Z"])) == 1
    days = sorted(p.name for p in (tmp_path / "interactions").iterdir())
    assert days == ["event_date=2024-01-01", "event_date=2024-01-02"]
    table = ds.dataset(tmp_path / "interactions", partitioning="hive").to_table()
    assert sorted(table["event_id"].to_pylist()) == ["a", "b", "c"]
    assert lake.count_interactions() == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_catalog_snapshots_are_written_only_when_content_changes(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    items = pd.DataFrame({"item_id": ["i1", "i2"], "title": ["A", "B"]})
    assert lake.write_snapshot("items", items) is True
    assert lake.write_snapshot("items", items.copy()) is False
    assert lake.write_snapshot("items", items.assign(title=["A", "C"])) is True
    latest = lake.latest_snapshot("items")
    assert latest is not None and latest["title"].tolist() == ["A", "C"]
    assert len(list((tmp_path / "catalog" / "items").iterdir())) == 2


def test_a_batch_with_repeated_ids_keeps_the_first_of_each(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    batch = frame(["z", "y", "z", "x", "y"], [f"2024-01-01T00:00:0{k}Z" for k in range(5)])
    assert lake.write_interactions(batch) == 3
    table = lake.interactions().to_pandas().set_index("event_id")
    assert table.loc["z", "event_time"] == pd.Timestamp("2024-01-01T00:00:00Z")
    assert table.loc["y", "event_time"] == pd.Timestamp("2024-01-01T00:00:01Z")


def test_concurrent_writers_of_one_day_keep_every_event(tmp_path: Path) -> None:
    """Several lake writers (group members, the import) merging into the same day file lose nothing."""
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    lake = Lake(tmp_path)
    batches = [[f"w{w}-{k}" for k in range(50)] for w in range(6)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda ids: lake.write_interactions(frame(ids, ["2024-01-01T10:00:00Z"] * len(ids))),
                      batches[:3]))
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write, args=(tmp_path, ids)) for ids in batches[3:]]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert sorted(lake.interactions()["event_id"].to_pylist()) == sorted(i for ids in batches for i in ids)
    assert not list(tmp_path.rglob("*.tmp"))


def _write(root: Path, ids: list[str]) -> None:
    Lake(root).write_interactions(frame(ids, ["2024-01-01T10:00:00Z"] * len(ids)))


def test_item_activity_equals_the_aggregates_of_every_event_read_in_small_batches(tmp_path: Path,
                                                                                  monkeypatch: object) -> None:
    import numpy as np
    import pytest

    from recsys.stores import lake as lake_module

    rng = np.random.default_rng(5)
    count = 3_000
    times = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 30 * 86_400, count), unit="s")
    events = pd.DataFrame({
        "event_id": [f"e{k}" for k in range(count)], "user_id": [f"u{k % 50}" for k in range(count)],
        "item_id": [f"i{k}" for k in rng.zipf(1.5, count) % 200], "event_time": times, "action_type": "view",
        "value": None, "session_id": None, "context": None})[list(INTERACTION_COLUMNS)]
    lake = Lake(tmp_path)
    lake.write_interactions(events)
    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(lake_module, "ACTIVITY_BATCH_ROWS", 97)  # many batches, merged several times over
    monkeypatch.setattr(lake_module, "ACTIVITY_PARTS_MERGED", 3)
    activity = lake.item_activity(recent_days=7)

    expected = events.groupby("item_id").agg(count=("event_id", "size"), first=("event_time", "min"))
    assert activity.counts.to_dict() == expected["count"].to_dict()
    assert list(activity.counts.to_numpy()) == sorted(activity.counts.to_numpy(), reverse=True)
    assert {i: pd.Timestamp(t) for i, t in activity.first_seen.items()} == expected["first"].to_dict()
    assert activity.newest == events["event_time"].max()
    window = events[events["event_time"] >= events["event_time"].max() - pd.Timedelta(days=7)]
    assert sorted(zip(activity.recent["item_id"], activity.recent["event_time"])) == sorted(
        zip(window["item_id"], window["event_time"]))
    empty = Lake(tmp_path / "none").item_activity(recent_days=7)
    assert empty.newest is None and empty.counts.empty and empty.recent.empty
