"""Training sets are point in time: each row carries the values true before its event, never after."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from recsys.errors import InvalidInputError
from recsys.features.service import MISSING, PRESENT, STALE, UnknownFeatureServiceError
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import Settings
from tests.features.tables import T0, item_rows, user_rows, write_empty_extras, write_table
from training.training_set import build_training_set


@pytest.fixture
def history(feature_settings: Settings) -> Settings:
    write_table(feature_settings, "user_features", [
        user_rows("u1", T0, interactions_total=10),
        user_rows("u1", T0 + timedelta(days=2), interactions_total=20),  # changes after the first event
    ])
    write_table(feature_settings, "item_features", [
        item_rows("i1", T0, avg_rating=4.0),
        item_rows("i1", T0 + timedelta(days=2), avg_rating=2.0),
        item_rows("i2", T0 - timedelta(days=400), avg_rating=5.0),  # past the 365-day TTL at T0 + 1 day
    ])
    write_empty_extras(feature_settings)
    apply_repo(feature_settings)
    return feature_settings


@pytest.mark.parametrize("profile", ["local"], indirect=True)
def test_each_row_sees_the_values_before_its_event(history: Settings) -> None:
    labelled = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u1"],
        "item_id": ["i1", "i1", "i2", "i1"],
        "event_timestamp": [T0 + timedelta(days=1), T0 + timedelta(days=3), T0 + timedelta(days=1),
                            T0 - timedelta(hours=1)],
        "label": [1, 0, 1, 0],
    })
    result = build_training_set(open_feature_store(history), labelled)
    frame, status = result.frame, result.status
    assert frame["label"].tolist() == [1, 0, 1, 0]  # input order kept
    assert frame["user_features__interactions_total"].tolist() == [10, 20, 10, 0]
    assert frame["item_features__avg_rating"].tolist() == [4.0, 2.0, 3.5, 3.5]
    assert status["item_features__avg_rating"].tolist() == [PRESENT, PRESENT, STALE, MISSING]
    assert status["user_features__interactions_total"].tolist() == [PRESENT, PRESENT, PRESENT, MISSING]
    # On-demand features are computed as of each event.
    assert frame["user_item_features__item_age_days"].iloc[0] == pytest.approx(101.0)
    assert frame["user_item_features__item_age_days"].iloc[1] == pytest.approx(103.0)
    assert frame["request_features__hour_of_day"].tolist() == [0, 0, 0, 23]


@pytest.mark.parametrize("profile", ["local"], indirect=True)
def test_bad_requests_are_clear_errors(history: Settings) -> None:
    store = open_feature_store(history)
    with pytest.raises(InvalidInputError, match="lack column\\(s\\) \\['label'\\]"):
        build_training_set(store, pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_timestamp": [T0]}))
    good = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_timestamp": [T0], "label": [1]})
    with pytest.raises(UnknownFeatureServiceError):
        build_training_set(store, good, service="nope")


@pytest.mark.parametrize("profile", ["local"], indirect=True)
def test_a_set_joined_in_chunks_is_the_set_joined_at_once(history: Settings) -> None:
    labelled = pd.DataFrame({
        "user_id": ["u1", "u2", "u1", "u1", "u1", "u2", "u1"],
        "item_id": ["i1", "i1", "i2", "i1", "i2", "i2", "i1"],
        "event_timestamp": [T0 + timedelta(days=d) for d in (1, 3, 1, -1, 5, 2, 3)],
        "label": [1, 0, 1, 0, 0, 1, 1],
    }, index=[10, 11, 12, 13, 14, 15, 16])
    store = open_feature_store(history)
    whole = build_training_set(store, labelled)
    chunked = build_training_set(store, labelled, chunk_rows=3)
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
    pd.testing.assert_frame_equal(chunked.status, whole.status)
    assert chunked.frame["user_features__interactions_total"].tolist() == [10, 0, 10, 0, 20, 0, 20]
