"""The fast online path returns exactly what Feast's get_online_features returns, with statuses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ingestion.features.materialize import materialize
from recsys.errors import InvalidInputError
from recsys.features.online import FastOnlineFeatures
from recsys.features.service import MISSING, PRESENT, STALE, UnknownFeatureServiceError, fill_defaults
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import Settings
from tests.features.tables import T0, item_rows, user_rows, write_empty_extras, write_table

NOW = T0 + timedelta(days=3, hours=10)


@pytest.fixture
def served(feature_settings: Settings) -> Settings:
    write_table(feature_settings, "user_features", [
        user_rows("u1", T0, interactions_total=12),
        user_rows("u2", T0, avg_rating_given=None, category_affinity_keys=None, category_affinity_values=None),
    ])
    items = [item_rows(f"i{k}", T0, interactions_total=k, category=["Drama", "Comedy", "Horror"][k % 3],
                       avg_rating=None if k == 4 else 3.0 + k / 10) for k in range(40)]
    items.append(item_rows("old", T0 - timedelta(days=400)))
    write_table(feature_settings, "item_features", items)
    write_empty_extras(feature_settings)
    apply_repo(feature_settings)
    store = open_feature_store(feature_settings)
    materialize(store, end=T0 + timedelta(days=1))
    # The old item is older than the TTL: materialization skips it, so write it directly.
    from ingestion.features.materialize import latest_rows, write_rows

    view = store.get_feature_view("item_features")
    write_rows(store, view, latest_rows(store, view, T0 - timedelta(days=500), T0 - timedelta(days=300)))
    return feature_settings


def feast_answer(settings: Settings, user: str, items: list[str], request: dict[str, Any]) -> dict[str, list[Any]]:
    store = open_feature_store(settings)
    rows = [{"user_id": user, "item_id": item, **request} for item in items]
    return store.get_online_features(features=store.get_feature_service("ranker_v1"), entity_rows=rows,
                                     full_feature_names=True).to_dict()


@pytest.mark.parametrize("user", ["u1", "u2", "nobody"])
def test_fast_path_equals_get_online_features(served: Settings, user: str) -> None:
    items = ["i3", "i0", "unknown", "i4", "old", "i39", "i3"]
    request = {"request_time": NOW, "device": "Android"}
    fast = FastOnlineFeatures(open_feature_store(served), "ranker_v1")
    fast.refresh()
    ours, _ = fast.get(user, items, request)
    assert ours == feast_answer(served, user, items, request)


def test_statuses_and_typed_defaults(served: Settings) -> None:
    fast = FastOnlineFeatures(open_feature_store(served), "ranker_v1")
    values, status = fast.get("u2", ["i4", "unknown", "old"], {"request_time": NOW, "device": "web"})
    assert status["item_features__avg_rating"] == [MISSING, MISSING, STALE]
    assert status["item_features__interactions_total"] == [PRESENT, MISSING, STALE]
    assert status["user_features__avg_rating_given"] == [MISSING] * 3
    filled = fill_defaults(values, status, fast.layout.specs)
    assert filled["item_features__avg_rating"] == [3.5, 3.5, 3.5]  # the `default` tag in features.py
    assert filled["item_features__interactions_total"][1:] == [0, 0]
    assert filled["user_features__engagement_level"] == ["medium"] * 3
    missing_user, user_status = fast.get("nobody", ["i1"], {"request_time": NOW, "device": "web"})
    assert user_status["user_features__interactions_total"] == [MISSING]
    assert fill_defaults(missing_user, user_status, fast.layout.specs)["user_features__interactions_total"] == [0]


def test_unknown_service_and_entities_are_clear_errors(served: Settings) -> None:
    store = open_feature_store(served)
    with pytest.raises(UnknownFeatureServiceError, match="unknown feature service 'ranker_v9'.*ranker_v1") as raised:
        FastOnlineFeatures(store, "ranker_v9")
    assert raised.value.http_status == 404
    fast = FastOnlineFeatures(store, "ranker_v1")
    with pytest.raises(InvalidInputError, match="lacks \\['device'\\]"):
        fast.get("u1", ["i1"], {"request_time": NOW})
    with pytest.raises(InvalidInputError, match="unknown \\['customer_id'\\]"):
        fast.get("u1", ["i1"], {"request_time": NOW, "device": "web", "customer_id": "c"})


@pytest.mark.parametrize("at", [NOW, NOW.replace(tzinfo=None) + timedelta(microseconds=123_457),
                                NOW + timedelta(days=800, seconds=1, microseconds=5)])
@pytest.mark.parametrize("device", ["Android", "TV", "fridge", ""])
def test_request_time_twins_give_the_definitions_values(served: Settings, at: Any, device: str) -> None:
    """The on-demand views' twins (no pandas) answer exactly what their Feast functions answer."""
    store = open_feature_store(served)
    twins, functions = FastOnlineFeatures(store, "ranker_v1"), FastOnlineFeatures(store, "ranker_v1", twins=False)
    items = ["i3", "i0", "unknown", "i4", "old", "i39", "i3"]
    for user in ("u1", "u2", "nobody"):
        request = {"request_time": at, "device": device}
        assert twins.get(user, items, request) == functions.get(user, items, request)
