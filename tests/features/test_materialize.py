"""Materialization into the online store: latest values, incremental, and Feast's exact layout."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ingestion.features.materialize import latest_rows, materialize
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import Settings
from tests.features.tables import T0, item_rows, user_rows, write_empty_extras, write_table


@pytest.fixture
def applied(feature_settings: Settings) -> Settings:
    write_table(feature_settings, "user_features", [
        user_rows("u1", T0, interactions_total=10),
        user_rows("u1", T0 + timedelta(days=1), interactions_total=12),
        user_rows("u2", T0, interactions_total=3, avg_rating_given=None),
    ])
    write_table(feature_settings, "item_features", [item_rows(f"i{k}", T0, interactions_total=k) for k in range(5)])
    write_empty_extras(feature_settings)
    apply_repo(feature_settings)
    return feature_settings


def online(settings: Settings, service: str, rows: list[dict[str, object]]) -> dict[str, list[object]]:
    store = open_feature_store(settings)
    return store.get_online_features(features=store.get_feature_service(service), entity_rows=rows).to_dict()


def test_latest_value_per_entity_is_served(applied: Settings) -> None:
    reports = materialize(open_feature_store(applied), end=T0 + timedelta(days=2))
    assert {r.view: r.rows for r in reports}["user_features"] == 2
    store = open_feature_store(applied)
    result = store.get_online_features(
        features=["user_features:interactions_total", "user_features:avg_rating_given", "user_features:top_categories"],
        entity_rows=[{"user_id": "u1"}, {"user_id": "u2"}, {"user_id": "nobody"}],
    ).to_dict()
    assert result["interactions_total"] == [12, 3, None]
    assert result["avg_rating_given"] == [4.0, None, None]
    assert result["top_categories"] == ["Drama|Comedy", "Drama|Comedy", None]


def test_incremental_runs_pick_up_only_new_rows(applied: Settings) -> None:
    materialize(open_feature_store(applied), end=T0 + timedelta(hours=12))
    write_table(applied, "user_features", [user_rows("u2", T0 + timedelta(days=3), interactions_total=99)])
    second = {r.view: r for r in materialize(open_feature_store(applied), end=T0 + timedelta(days=4))}
    assert second["user_features"].rows == 2  # u1's day-2 row and u2's new row
    assert second["user_features"].start == T0 + timedelta(hours=12)
    store = open_feature_store(applied)
    values = store.get_online_features(features=["user_features:interactions_total"],
                                       entity_rows=[{"user_id": "u1"}, {"user_id": "u2"}]).to_dict()
    assert values["interactions_total"] == [12, 99]


def test_a_backfill_from_a_start_takes_rows_older_than_the_ttl(applied: Settings) -> None:
    end = T0 + timedelta(days=800)  # every row is more than the views' 365-day TTL before the end
    assert {r.view: r.rows for r in materialize(open_feature_store(applied), end=end)}["user_features"] == 0
    backfill = {r.view: r for r in materialize(open_feature_store(applied), end=end, start=T0 - timedelta(days=1))}
    assert backfill["user_features"].rows == 2 and backfill["user_features"].start == T0 - timedelta(days=1)
    store = open_feature_store(applied)
    values = store.get_online_features(features=["user_features:interactions_total"],
                                       entity_rows=[{"user_id": "u1"}]).to_dict()
    assert values["interactions_total"] == [12]


def test_latest_rows_breaks_ties_by_created_timestamp(applied: Settings) -> None:
    later = user_rows("u3", T0, interactions_total=7)
    later["created_timestamp"] = later["created_timestamp"] + timedelta(days=1)  # type: ignore[operator]
    write_table(applied, "user_features", [user_rows("u3", T0, interactions_total=5), later])
    store = open_feature_store(applied)
    view = store.get_feature_view("user_features")
    table = latest_rows(store, view, T0 - timedelta(days=1), T0 + timedelta(days=5)).to_pandas()
    assert table.set_index("user_id").loc["u3", "interactions_total"] == 7
    assert sorted(table["user_id"]) == ["u1", "u2", "u3"]


@pytest.mark.parametrize("profile", ["services"], indirect=True)
def test_redis_bytes_equal_feasts_own_write(applied: Settings) -> None:
    """Our encoder writes byte for byte what Feast's write_to_online_store writes."""
    import redis

    store = open_feature_store(applied)
    view = store.get_feature_view("user_features")
    rows = latest_rows(store, view, T0 - timedelta(days=1), T0 + timedelta(days=5))
    client = redis.Redis(host=applied.redis.host, port=applied.redis.port, db=applied.redis.db)

    def snapshot() -> dict[bytes, dict[bytes, bytes]]:
        keys = [k for k in client.keys(b"*") if k.endswith(applied.features.project.encode())]
        return {k: client.hgetall(k) for k in keys}

    store.write_to_online_store("user_features", rows.to_pandas())
    theirs = snapshot()
    for key in theirs:
        client.delete(key)
    from ingestion.features.materialize import write_rows

    write_rows(store, view, rows)
    ours = snapshot()
    assert len(ours) == 2 and ours == theirs
