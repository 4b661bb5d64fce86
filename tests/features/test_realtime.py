"""The `user_realtime` features: the consumer's online values equal the offline history's at the same moment."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ingestion.features.realtime_table import write_realtime_table
from recsys.backends import open_consumer, open_lake
from recsys.features.online import FastOnlineFeatures
from recsys.features.realtime import COUNTED, FEATURES, realtime_features, realtime_history
from recsys.features.service import MISSING, PRESENT, fresh_share, service_layout
from recsys.features.store import apply_repo, inside_repo, open_feature_store
from recsys.settings import Settings
from recsys.stores.activity import Activity, merge
from recsys.streaming.decode import decode

ACTIONS = (*COUNTED, "skip", "like")


def synthetic_events(users: int, per_user: int, end: datetime, seed: int = 7) -> pd.DataFrame:
    """Events over the 30 hours before `end`, with bursts (sessions), gaps and same-millisecond pairs."""
    rng = np.random.default_rng(seed)
    run = uuid.uuid4().hex[:6]  # users of this run only: the Redis logs outlive a test
    rows = []
    for u in range(users):
        at = end - timedelta(hours=30)
        for _ in range(per_user):
            gap = rng.choice([0, 20_000, 90_000, 40 * 60_000, 3 * 3_600_000], p=[0.05, 0.6, 0.25, 0.07, 0.03])
            at += timedelta(milliseconds=int(gap))
            if at >= end:
                break
            rows.append({"event_id": str(uuid.uuid4()), "user_id": f"rt{run}-{u}", "item_id": f"it{rng.integers(40)}",
                         "event_time": at, "action_type": str(rng.choice(ACTIONS))})
    frame = pd.DataFrame(rows)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).dt.as_unit("ms")
    return frame


CATEGORIES = {f"it{k}": f"cat{k % 6}" for k in range(35)}  # it35..it39: no category


def batches(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    """Consecutive batches of about `size` events, cut only where the time changes (as the stream is ordered)."""
    frame = frame.sort_values(["event_time", "event_id"]).reset_index(drop=True)
    times = frame["event_time"]
    cuts = [k for k in range(size, len(frame), size) if times.iloc[k] != times.iloc[k - 1]]
    return [frame.iloc[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)])]


def same(online: Any, offline: Any) -> bool:
    if isinstance(online, list) or isinstance(offline, (list, np.ndarray)):
        return list(online if online is not None else []) == list(offline if offline is not None else [])
    if isinstance(online, pd.Timestamp) or isinstance(offline, pd.Timestamp | datetime):
        return pd.Timestamp(online).tz_convert("UTC") == pd.Timestamp(offline).tz_convert("UTC")
    return bool(online == offline)


def test_both_evaluators_agree_on_every_state_the_consumer_can_push() -> None:
    events = synthetic_events(users=6, per_user=400, end=datetime(2026, 3, 1, tzinfo=UTC))
    history = realtime_history(events, CATEGORIES)
    checked = 0
    for user, mine in events.groupby("user_id"):
        log: list[Activity] = []
        for batch in batches(mine, 7):
            log = merge(log, [Activity(r.event_id, int(r.event_time.value // 1_000_000), r.item_id, r.action_type)
                              for r in batch.itertuples()])
            online = realtime_features(str(user), log, CATEGORIES)
            offline = history[(history["user_id"] == user)
                              & (history["event_timestamp"] <= online["event_timestamp"])].iloc[-1]
            wrong = [f for f in FEATURES if not same(online[f], offline[f])]
            assert not wrong, (user, online["event_timestamp"], {f: (online[f], offline[f]) for f in wrong})
            checked += 1
    assert checked > 50
    assert history["session_events"].max() > 5 and history["events_1h"].max() > 10  # the data exercises them


def payload(row: Any) -> dict[str, Any]:
    return decode(json.dumps({
        "kind": "interaction", "schema_version": 1, "event_id": row.event_id, "user_id": row.user_id,
        "item_id": row.item_id, "event_time": row.event_time.isoformat(), "action_type": row.action_type,
        "value": None, "session_id": None, "context": {}}).encode())


def test_the_updater_pushes_online_what_training_joins_point_in_time(feature_settings: Settings,
                                                                     tmp_path: Path) -> None:
    settings = feature_settings
    now = datetime.now(UTC).replace(microsecond=0)
    events = synthetic_events(users=5, per_user=150, end=now - timedelta(minutes=5))
    moment = events["event_time"].sort_values().iloc[len(events) * 2 // 3]  # the consumer has seen up to here
    lake = open_lake(settings)
    lake.write_snapshot("items", pd.DataFrame({"item_id": list(CATEGORIES), "category": list(CATEGORIES.values())}))
    lake.write_interactions(events.assign(value=np.nan, session_id=None, context=None))
    assert write_realtime_table(lake, settings.feature_data_path) > 0  # the whole history, past `moment` too
    apply_repo(settings)
    updater = open_consumer(settings, "features")
    for batch in batches(events[events["event_time"] <= moment], 17):
        updater.handle([payload(r) for r in batch.itertuples()])
    updater.close()

    store = open_feature_store(settings)
    users = sorted(events["user_id"].unique())
    refs = [f"user_realtime:{f}" for f in FEATURES]
    online = store.get_online_features(features=refs, entity_rows=[{"user_id": u} for u in users]).to_dict()
    with inside_repo(settings.features.repo_path):  # the file sources' paths are relative to the repository
        offline = store.get_historical_features(
            entity_df=pd.DataFrame({"user_id": users, "event_timestamp": [moment] * len(users)}), features=refs,
        ).to_df().set_index("user_id").loc[users]
    for feature in FEATURES:
        for k, user in enumerate(users):
            assert same(online[feature][k], offline[feature].iloc[k]), (feature, user, online[feature][k],
                                                                         offline[feature].iloc[k])
    fast = FastOnlineFeatures(store, "realtime_v1")
    values, status = fast.user_features(users[0])
    assert all(s == "present" for column in status.values() for s in column)
    assert values["user_realtime__events_1d"] == [online["events_1d"][0]]


def test_a_user_without_recent_events_is_not_stale(feature_settings: Settings) -> None:
    """No `user_realtime` row means no event in the last day: its zeros are the truth, not missing data."""
    apply_repo(feature_settings)
    layout = service_layout(open_feature_store(feature_settings), "ranker_v2")
    assert any(spec.view == "user_realtime" for spec in layout.specs)
    status = {spec.ref: [MISSING if spec.view == "user_realtime" else PRESENT] * 3 for spec in layout.specs}
    assert fresh_share(status, layout) == 1.0
    status = {spec.ref: [MISSING if spec.view == "user_features" else PRESENT] * 3 for spec in layout.specs}
    assert fresh_share(status, layout) < 1.0  # a missing snapshot row still counts


def test_the_fast_writer_stores_what_feasts_push_stores(feature_settings: Settings) -> None:
    """The updater writes through the fast online writer: the same stored values as `FeatureStore.push`, and on
    Redis the same bytes."""
    settings = feature_settings
    apply_repo(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    events = synthetic_events(users=4, per_user=60, end=now - timedelta(minutes=1))
    consumers = {"feast": open_consumer(settings, "features"), "fast": open_consumer(settings, "features")}
    consumers["feast"].feast_push = True  # type: ignore[attr-defined]
    assert consumers["fast"].feast_push is False  # type: ignore[attr-defined]
    stored: dict[str, Any] = {}
    for name, updater in consumers.items():
        users = events.assign(user_id=events["user_id"] + f"-{name}")
        for batch in batches(users, 25):
            updater.handle([payload(r) for r in batch.itertuples()])
        updater.close()
        ids = sorted(users["user_id"].unique())
        store = open_feature_store(settings)
        online = store.get_online_features(features=[f"user_realtime:{f}" for f in FEATURES],
                                           entity_rows=[{"user_id": u} for u in ids]).to_dict()
        stored[name] = {k: v for k, v in online.items() if k != "user_id"}
        if settings.profile == "services":
            import redis

            from recsys.features.writer import _redis_address

            host, port, db = _redis_address(store.config.online_store.connection_string)
            client = redis.Redis(host=host, port=port, db=db)
            from feast.infra.key_encoding_utils import serialize_entity_key
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            version = store.config.entity_key_serialization_version
            stored[f"{name}-bytes"] = [
                {f: v for f, v in client.hgetall(serialize_entity_key(EntityKey(
                    join_keys=["user_id"], entity_values=[Value(string_val=u)]), version)
                    + settings.features.project.encode()).items()} for u in ids]
    assert stored["fast"] == stored["feast"] and stored["fast"]["events_1d"]
    if settings.profile == "services":
        assert stored["fast-bytes"] == stored["feast-bytes"] and stored["fast-bytes"][0]


def test_serving_reads_the_realtime_row_at_every_request_and_caches_the_others(feature_settings: Settings) -> None:
    """Layer 3 keeps user rows for 15 minutes, except `user_realtime`'s, which the consumers rewrite at every
    event: a second visit soon after a click must rank on that click (the skew report found it served stale)."""
    from bento_services.pipeline.caches import CachedOnlineFeatures

    settings = feature_settings
    apply_repo(settings)
    events = synthetic_events(users=1, per_user=40, end=datetime.now(UTC) - timedelta(minutes=1))
    user = str(events["user_id"].iloc[0])
    store = open_feature_store(settings)
    cached = CachedOnlineFeatures(store, "ranker_v2", ttl_seconds=900.0)
    updater = open_consumer(settings, "features")
    seen, stored = [], []
    try:
        for part in (events.iloc[:3], events.iloc[3:]):
            updater.handle([payload(r) for r in part.itertuples()])
            values, _ = cached.user_features(user)
            seen.append(values["user_realtime__events_1d"][0])
            stored.append(store.get_online_features(features=["user_realtime:events_1d"],
                                                    entity_rows=[{"user_id": user}]).to_dict()["events_1d"][0])
    finally:
        updater.close()
    assert seen == stored and stored[0] != stored[1]
    hit, _ = cached._user_rows.get(("user_features", user))
    assert hit  # the snapshot views stay cached


def _days_of_events(start: datetime, days: int, users: int = 8, seed: int = 3) -> pd.DataFrame:
    """Events of the same users over `days` days, dense around midnight (sessions and the 1-day window cross it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        at = start
        while at < start + timedelta(days=days):
            at += timedelta(milliseconds=int(rng.choice([0, 30_000, 600_000, 2 * 3_600_000], p=[0.05, 0.5, 0.3, 0.15])))
            rows.append({"event_id": str(uuid.uuid4()), "user_id": f"u{u}", "item_id": f"it{rng.integers(40)}",
                         "event_time": at, "action_type": str(rng.choice(ACTIONS))})
    frame = pd.DataFrame(rows)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).dt.as_unit("ms")
    return frame[frame["event_time"] < pd.Timestamp(start + timedelta(days=days))]


def _table(folder: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    frame = pq.read_table(folder / "user_realtime").to_pandas()
    return frame.sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)


def test_the_offline_table_rebuilds_only_the_days_that_changed_and_equals_a_full_build(tmp_path: Path) -> None:
    from recsys.stores.lake import Lake

    start = datetime(2026, 3, 1, tzinfo=UTC)
    events = _days_of_events(start, 6)
    lake = Lake(tmp_path / "lake")
    lake.write_snapshot("items", pd.DataFrame({"item_id": list(CATEGORIES), "category": list(CATEGORIES.values())}))
    first = events[events["event_time"] < pd.Timestamp(start + timedelta(days=5))]
    lake.write_interactions(first.assign(value=np.nan, session_id=None, context=None))
    out = tmp_path / "features"
    assert write_realtime_table(lake, out) == len(_table(out)) > 0  # the first build: every day
    assert write_realtime_table(lake, out) == 0  # nothing changed: nothing rebuilt

    last = events[events["event_time"] >= pd.Timestamp(start + timedelta(days=5))]
    lake.write_interactions(last.assign(value=np.nan, session_id=None, context=None))
    written = write_realtime_table(lake, out)
    full = realtime_history(events, CATEGORIES).sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
    assert 0 < written == int((full["event_timestamp"] >= pd.Timestamp(start + timedelta(days=5))).sum())
    table = _table(out)
    assert len(table) == len(full)
    for name in FEATURES:
        assert all(same(a, b) for a, b in zip(table[name], full[name])), name  # as if rebuilt from scratch

    late = _days_of_events(start + timedelta(days=2, hours=23), 1, users=2, seed=9).head(20)  # late events, day 3
    lake.write_interactions(late.assign(value=np.nan, session_id=None, context=None))
    written = write_realtime_table(lake, out)
    both = pd.concat([events, late], ignore_index=True)
    full = realtime_history(both, CATEGORIES).sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
    days = full["event_timestamp"].dt.strftime("%Y-%m-%d")
    changed = {d for d in late["event_time"].dt.strftime("%Y-%m-%d")}
    nexts = {(pd.Timestamp(d) + pd.Timedelta(days=1)).strftime("%Y-%m-%d") for d in changed}
    assert written == int(days.isin(changed | nexts).sum()) < len(full)  # those days and the next, no more
    table = _table(out)
    for name in FEATURES:
        assert all(same(a, b) for a, b in zip(table[name], full[name])), name

    lake.write_snapshot("items", pd.DataFrame({"item_id": list(CATEGORIES), "category": ["new"] * len(CATEGORIES)}))
    assert write_realtime_table(lake, out) == len(full)  # new categories: every day again
    assert set(_table(out)["last_categories"].explode().dropna()) == {"new"}
