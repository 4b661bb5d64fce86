"""The Spark feature job on a tiny lake whose right answers are worked out by hand.

Day D0 = 2024-03-01. User u1 acts on D0 (two gap-split sessions) and D0+3; u2 has one session id spanning
two hours on D0+1; u3 acts on D0-1 and D0; u4 views i3 five times on D0+3. Items: i1 and i3 in category A,
i2 in B, i4 not in the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from ingestion.features.engineering import FeatureJobConfig, run_feature_job
from ingestion.features.realtime_table import RECORD as REALTIME_RECORD
from recsys.events import INTERACTION_COLUMNS
from recsys.stores.lake import Lake

D0 = datetime(2024, 3, 1, tzinfo=UTC)
AS_OF = D0 + timedelta(days=40)
USER_COLUMNS = [
    "user_id", "event_timestamp", "created_timestamp", "interactions_total", "views_total", "clicks_total",
    "purchases_total", "rates_total", "tags_total", "interactions_7d", "interactions_30d", "avg_rating_given",
    "first_interaction_at", "last_interaction_at", "sessions_total", "sessions_per_week", "avg_session_events",
    "avg_session_minutes", "preferred_hour", "top_categories", "category_affinity_keys", "category_affinity_values",
    "engagement_level",
]
ITEM_COLUMNS = [
    "item_id", "event_timestamp", "created_timestamp", "category", "interactions_total", "interactions_7d",
    "interactions_30d", "views_total", "clicks_total", "purchases_total", "rating_count", "avg_rating", "click_rate",
    "purchase_rate", "first_seen_at", "category_popularity_rank",
]
COOCCURRENCE_COLUMNS = ["item_id", "event_timestamp", "created_timestamp", "neighbours", "neighbour_scores"]


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return D0 + timedelta(days=day, hours=hour, minutes=minute)


EVENTS = [
    # user, item, time, action, value, session_id
    ("u1", "i1", at(0, 10, 0), "view", None, None),
    ("u1", "i1", at(0, 10, 5), "click", None, None),
    ("u1", "i1", at(0, 10, 20), "purchase", None, None),
    ("u1", "i4", at(0, 10, 25), "skip", None, None),
    ("u1", "i2", at(0, 11, 0), "rate", 4.0, None),  # 35 minutes later: a new session
    ("u1", "i2", at(0, 11, 10), "tag", None, None),
    ("u1", "i2", at(0, 11, 15), "like", None, None),
    ("u1", "i2", at(0, 11, 20), "share", None, None),
    ("u1", "i3", at(3, 22, 0), "view", None, None),
    ("u2", "i1", at(1, 9, 0), "view", None, "s1"),
    ("u2", "i2", at(1, 11, 30), "view", None, "s1"),  # same session id: the same session despite the gap
    ("u2", "i2", at(1, 11, 35), "rate", 2.0, "s1"),
    ("u3", "i1", at(-1, 8, 0), "view", None, None),
    ("u3", "i2", at(0, 10, 0), "view", None, None),
    ("u3", "i3", at(0, 10, 10), "click", None, None),
    *[("u4", "i3", at(3, 12, minute), "view", None, None) for minute in range(5)],
]


def write_lake(root: Path) -> Lake:
    lake = Lake(root)
    frame = pd.DataFrame(EVENTS, columns=["user_id", "item_id", "event_time", "action_type", "value", "session_id"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["value"] = frame["value"].astype("float64")
    frame["event_id"] = [f"e{n}" for n in range(len(frame))]
    frame["context"] = None
    lake.write_interactions(frame[list(INTERACTION_COLUMNS)])
    items = pd.DataFrame({
        "item_id": ["i1", "i2", "i3"], "title": ["One", "Two", "Three"], "category": ["A", "B", "A"],
        "created_at": pd.to_datetime(["2023-01-01T00:00:00Z", None, None], utc=True),
    })
    lake.write_snapshot("items", items)
    return lake


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("features") / "lake"
    write_lake(root)
    return root


@pytest.fixture(scope="module")
def tables(lake_root: Path) -> Iterator[dict[str, pd.DataFrame]]:
    output = lake_root / "features"
    written = run_feature_job(FeatureJobConfig(lake=lake_root, output=output, as_of=AS_OF), progress=lambda _: None)
    frames = {name: pd.read_parquet(output / name) for name in written}
    assert {name: len(frame) for name, frame in frames.items()} == written
    yield frames


def row(frame: pd.DataFrame, key: str, entity: str, boundary: datetime) -> pd.Series:
    match = frame[(frame[key] == entity) & (frame["event_timestamp"] == pd.Timestamp(boundary))]
    assert len(match) == 1, f"{entity} has {len(match)} rows at {boundary}"
    return match.iloc[0]


def boundaries(frame: pd.DataFrame, key: str, entity: str) -> list[int]:
    """The entity's snapshot timestamps as day offsets from D0."""
    stamps = frame.loc[frame[key] == entity, "event_timestamp"].sort_values()
    return [(stamp - pd.Timestamp(D0)).days for stamp in stamps]


def test_a_snapshot_sees_only_events_before_its_timestamp(tables: dict[str, pd.DataFrame]) -> None:
    users = tables["user_features"]
    assert boundaries(users, "user_id", "u3")[:2] == [0, 1]
    assert row(users, "user_id", "u3", D0)["interactions_total"] == 1  # D0-1 only, not D0 10:00
    assert row(users, "user_id", "u3", at(1, 0))["interactions_total"] == 3
    # A point-in-time join for a training event at D0 12:00 reads the D0 00:00 snapshot.
    training = pd.DataFrame({"user_id": ["u3"], "event_timestamp": [pd.Timestamp(at(0, 12))]})
    training["event_timestamp"] = training["event_timestamp"].astype(users["event_timestamp"].dtype)
    joined = pd.merge_asof(training, users.sort_values("event_timestamp"), on="event_timestamp", by="user_id")
    assert joined.loc[0, "interactions_total"] == 1
    assert (users["event_timestamp"] == users["event_timestamp"].dt.floor("D")).all()


def test_b_rows_only_on_activity_and_window_decay_days(tables: dict[str, pd.DataFrame]) -> None:
    users = tables["user_features"]
    # Activity on D0 and D0+3: snapshots after each, then when each day leaves the 7- and 30-day windows.
    assert boundaries(users, "user_id", "u1") == [1, 4, 8, 11, 31, 34]
    counts = [(row(users, "user_id", "u1", at(day, 0))[["interactions_7d", "interactions_30d"]].tolist())
              for day in (1, 4, 8, 11, 31, 34)]
    assert counts == [[8, 8], [9, 9], [1, 9], [0, 9], [0, 1], [0, 0]]
    assert row(users, "user_id", "u1", at(34, 0))["interactions_total"] == 9
    assert row(users, "user_id", "u1", at(11, 0))["engagement_level"] == "medium"
    assert row(users, "user_id", "u1", at(34, 0))["engagement_level"] == "low"


def test_snapshots_stop_at_as_of(lake_root: Path, tmp_path: Path) -> None:
    written = run_feature_job(FeatureJobConfig(lake=lake_root, output=tmp_path, as_of=at(10, 12)),
                              progress=lambda _: None)
    users = pd.read_parquet(tmp_path / "user_features")
    assert boundaries(users, "user_id", "u1") == [1, 4, 8, 11]  # the D0+10 snapshot closes at D0+11 00:00
    assert users["event_timestamp"].max() == pd.Timestamp(at(11, 0))
    cooccurrence = pd.read_parquet(tmp_path / "item_cooccurrence")
    assert (cooccurrence["event_timestamp"] == pd.Timestamp(at(10, 12))).all()
    assert written["user_features"] == len(users)


def test_c_user_counts_sessions_hours_and_affinity(tables: dict[str, pd.DataFrame]) -> None:
    final = row(tables["user_features"], "user_id", "u1", at(4, 0))
    counts = final[["interactions_total", "views_total", "clicks_total", "purchases_total", "rates_total",
                    "tags_total"]].tolist()
    assert counts == [9, 2, 1, 1, 1, 1]
    assert final["avg_rating_given"] == 4.0
    assert final["first_interaction_at"] == pd.Timestamp(at(0, 10))
    assert final["last_interaction_at"] == pd.Timestamp(at(3, 22))
    # Sessions: 10:00-10:25 (4 events), 11:00-11:20 (4), D0+3 22:00 (1); 3.5 days count as one week.
    assert final["sessions_total"] == 3
    assert final["avg_session_events"] == pytest.approx(3.0)
    assert final["avg_session_minutes"] == pytest.approx(15.0)
    assert final["sessions_per_week"] == pytest.approx(3.0)
    assert final["preferred_hour"] == 10  # four events at 10h and four at 11h: the smaller hour wins
    # Affinity: A = view 1 + click 2 + purchase 5 + view 1; B = rate 4/5*4 + tag 2 + like 3 + share 3; skip 0.
    assert list(final["category_affinity_keys"]) == ["B", "A"]
    assert list(final["category_affinity_values"]) == pytest.approx([11.2 / 20.2, 9 / 20.2], rel=1e-6)
    assert sum(final["category_affinity_values"]) == pytest.approx(1.0, rel=1e-6)
    assert final["top_categories"] == "B|A"
    u2 = row(tables["user_features"], "user_id", "u2", at(2, 0))
    assert (u2["sessions_total"], u2["avg_session_minutes"]) == (1, pytest.approx(155.0))
    assert math.isnan(row(tables["user_features"], "user_id", "u3", at(1, 0))["avg_rating_given"])


def test_d_item_rates_first_seen_and_category_rank(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["item_features"]
    i1 = row(items, "item_id", "i1", at(2, 0))
    assert i1[["interactions_total", "views_total", "clicks_total", "purchases_total"]].tolist() == [5, 3, 1, 1]
    assert (i1["click_rate"], i1["purchase_rate"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert i1["first_seen_at"] == pd.Timestamp("2023-01-01", tz="UTC")  # from the catalog
    assert (i1["category"], i1["rating_count"]) == ("A", 0) and math.isnan(i1["avg_rating"])
    i2 = row(items, "item_id", "i2", at(2, 0))
    assert (i2["rating_count"], i2["avg_rating"], i2["click_rate"]) == (2, 3.0, 0.0)
    assert i2["first_seen_at"] == pd.Timestamp(at(0, 10))  # no created_at: the first event
    i4 = row(items, "item_id", "i4", at(1, 0))
    assert i4["category"] == "unknown" and math.isnan(i4["click_rate"])
    # Category A: i1 leads until u4's five views make i3 the most popular on D0+3.
    rank = {(item, day): row(items, "item_id", item, at(day, 0))["category_popularity_rank"]
            for item, day in [("i1", 1), ("i3", 1), ("i1", 2), ("i3", 4), ("i1", 8)]}
    assert rank == {("i1", 1): 1, ("i3", 1): 2, ("i1", 2): 1, ("i3", 4): 1, ("i1", 8): 2}
    assert row(items, "item_id", "i2", at(1, 0))["category_popularity_rank"] == 1


def test_e_cooccurrence_neighbours_and_cosine_scores(tables: dict[str, pd.DataFrame]) -> None:
    # Sessions holding each item: i1 3, i2 3, i3 3, i4 1; pairs i1-i4, i1-i2 and i2-i3 once each.
    frame = tables["item_cooccurrence"].set_index("item_id")
    expected = {
        "i1": (["i4", "i2"], [1 / math.sqrt(3), 1 / 3]),
        "i2": (["i1", "i3"], [1 / 3, 1 / 3]),  # a tie: neighbour id ascending
        "i3": (["i2"], [1 / 3]),
        "i4": (["i1"], [1 / math.sqrt(3)]),
    }
    assert sorted(frame.index) == sorted(expected)
    for item, (neighbours, scores) in expected.items():
        assert list(frame.loc[item, "neighbours"]) == neighbours
        assert list(frame.loc[item, "neighbour_scores"]) == pytest.approx(scores, rel=1e-6)
    assert (frame["event_timestamp"] == pd.Timestamp(AS_OF)).all()


def test_f_tables_read_back_with_exactly_their_columns(tables: dict[str, pd.DataFrame], lake_root: Path) -> None:
    expected = {"user_features": USER_COLUMNS, "item_features": ITEM_COLUMNS, "item_cooccurrence": COOCCURRENCE_COLUMNS}
    for name, columns in expected.items():
        frame = tables[name]
        assert list(frame.columns) == columns
        assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"
        assert frame["created_timestamp"].nunique() == 1
        files = [path.name for path in (lake_root / "features" / name).iterdir()]
        assert files and all(file.startswith("part-") and file.endswith(".parquet") for file in files)
    # and the real-time view's history (tests/features/test_realtime.py checks its values)
    assert sorted(path.name for path in (lake_root / "features").iterdir()) == sorted([*expected, "user_realtime",
                                                                                      REALTIME_RECORD])
    users, items = tables["user_features"], tables["item_features"]
    assert users.dtypes[["interactions_total", "preferred_hour"]].astype(str).tolist() == ["int64", "int32"]
    assert items.dtypes[["avg_rating", "category_popularity_rank"]].astype(str).tolist() == ["float64", "int32"]


def test_a_second_run_replaces_the_tables(lake_root: Path, tmp_path: Path) -> None:
    output = tmp_path / "features"
    stale = output / "user_features"
    stale.mkdir(parents=True)
    (stale / "part-stale.parquet").write_bytes(b"not parquet")
    written = run_feature_job(FeatureJobConfig(lake=lake_root, output=output), progress=lambda _: None)
    users = pd.read_parquet(stale)
    assert len(users) == written["user_features"]
    assert users["event_timestamp"].max() == pd.Timestamp(at(4, 0))  # default as_of: the last event, D0+3
    assert sorted(path.name for path in output.iterdir()) == sorted([*written, REALTIME_RECORD])


def test_weekly_cadence_cuts_at_multiples_of_seven_days_from_the_epoch(lake_root: Path, tmp_path: Path) -> None:
    run_feature_job(FeatureJobConfig(lake=lake_root, output=tmp_path, as_of=AS_OF, cadence_days=7),
                    progress=lambda _: None)
    users = pd.read_parquet(tmp_path / "user_features")
    epoch_days = (users["event_timestamp"] - pd.Timestamp(0, tz="UTC")).dt.days
    assert (epoch_days % 7 == 0).all()
    # D0 and D0+3 share the week that closes at D0+6; both leave the 7-day window at D0+13, the 30-day at D0+34.
    assert boundaries(users, "user_id", "u1") == [6, 13, 34]
    counts = [row(users, "user_id", "u1", at(day, 0))[["interactions_7d", "interactions_30d"]].tolist()
              for day in (6, 13, 34)]
    assert counts == [[9, 9], [0, 9], [0, 0]]


def test_spark_python_workers_run_the_project_interpreter(tables: dict[str, pd.DataFrame]) -> None:
    """Workers must not run the first `python3` on PATH (another version, or one without the venv's packages)."""
    import sys

    from ingestion.features.engineering import spark_session

    spark = spark_session()  # the job's session, still alive after the `tables` fixture ran the job
    workers = spark.sparkContext.parallelize([0, 1], 2).map(lambda _: __import__("sys").executable).collect()
    assert set(workers) == {sys.executable}
