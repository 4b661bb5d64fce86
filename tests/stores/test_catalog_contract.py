"""One contract for every CatalogStore: SQLite (`local`) and PostgreSQL (`services`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from recsys.stores import CatalogStore
from recsys.stores.catalog import ITEM_COLUMNS, Recommendation

T0 = datetime(2024, 1, 20, 12, 0, tzinfo=UTC)


def items_frame(**overrides: object) -> pd.DataFrame:
    frame = pd.DataFrame({
        "item_id": ["m1", "m2"],
        "title": ["Toy Story (1995)", "Heat (1995)"],
        "description": [None, "a heist"],
        "category": ["Animation", "Action"],
        "subcategory": ["Children", None],
        "tags": [["Animation", "Children"], ["Action"]],
        "content_features": [{"year": 1995, "genres": ["Animation"]}, {"year": 1995}],
        "created_at": [T0, T0],
    })
    for column, value in overrides.items():
        frame[column] = value
    return frame


def test_migrate_twice_is_harmless(catalog: CatalogStore) -> None:
    catalog.migrate()
    assert catalog.counts() == {"users": 0, "items": 0, "precomputed_recommendations": 0}


def test_items_round_trip_with_their_types(catalog: CatalogStore) -> None:
    catalog.write(items=items_frame())
    item = catalog.get_item("m1")
    assert item is not None
    assert item["title"] == "Toy Story (1995)"
    assert item["tags"] == ["Animation", "Children"]
    assert item["content_features"] == {"year": 1995, "genres": ["Animation"]}
    assert item["created_at"] == T0
    assert item["is_active"] is True and item["interaction_count"] == 0
    assert catalog.get_item("nope") is None
    assert catalog.item_ids() == {"m1", "m2"}


def test_items_read_back_from_parquet_store_as_plain_json(catalog: CatalogStore, tmp_path: Path) -> None:
    """A lake snapshot read back holds numpy arrays and scalars inside lists and dicts; they store as JSON."""
    items_frame().to_parquet(tmp_path / "items.parquet")
    catalog.write(items=pd.read_parquet(tmp_path / "items.parquet"))
    item = catalog.get_item("m1")
    assert item is not None and item["content_features"] == {"year": 1995, "genres": ["Animation"]}
    assert item["tags"] == ["Animation", "Children"]


def test_upsert_by_id_keeps_one_row_and_keeps_unspecified_values(catalog: CatalogStore) -> None:
    catalog.write(items=items_frame())
    catalog.write(items=items_frame(title=["Toy Story", "Heat"], description=[None, None]))
    assert catalog.counts()["items"] == 2
    heat = catalog.get_item("m2")
    assert heat is not None and heat["title"] == "Heat" and heat["description"] == "a heist"


def test_item_stats_update_popularity_and_fill_missing_created_at(catalog: CatalogStore) -> None:
    catalog.write(items=items_frame(created_at=[T0, None]))
    stats = pd.DataFrame({
        "item_id": ["m1", "m2"], "view_count": [3, 0], "interaction_count": [7, 1],
        "avg_rating": [4.25, None], "first_seen": [T0 + timedelta(days=1), T0 + timedelta(days=2)],
    })
    catalog.write(item_stats=stats)
    m1, m2 = catalog.get_item("m1"), catalog.get_item("m2")
    assert m1 is not None and m2 is not None
    assert (m1["view_count"], m1["interaction_count"], m1["avg_rating"]) == (3, 7, 4.25)
    assert m1["created_at"] == T0  # an existing created_at is never moved
    assert m2["created_at"] == T0 + timedelta(days=2) and m2["avg_rating"] is None


def test_users_from_events_do_not_erase_a_profile(catalog: CatalogStore) -> None:
    profile = pd.DataFrame({"user_id": ["u1"], "language": ["fr"], "preferred_categories": [["Drama"]]})
    catalog.write(users=profile)
    seen = pd.DataFrame({"user_id": ["u1"], "last_active_at": [T0], "total_interactions": [12],
                         "engagement_level": ["low"], "is_new_user": [False]})
    catalog.write(users=seen)
    user = catalog.get_user("u1")
    assert user is not None
    assert user["language"] == "fr" and user["preferred_categories"] == ["Drama"]
    assert user["total_interactions"] == 12 and user["is_new_user"] is False
    assert user["last_active_at"] == T0


def test_a_failed_write_leaves_nothing(catalog: CatalogStore) -> None:
    bad_users = pd.DataFrame({"user_id": ["u1", None]})  # user_id is NOT NULL
    with pytest.raises(Exception, match="(?i)null|not null|constraint"):
        catalog.write(items=items_frame(), users=bad_users)
    assert catalog.counts()["items"] == 0 and catalog.counts()["users"] == 0


def test_precomputed_recommendations_replace_and_expire(catalog: CatalogStore) -> None:
    first = [Recommendation("m1", 1, 0.9, "popular"), Recommendation("m2", 2, 0.5, "popular")]
    catalog.put_recommendations("u1", "homepage", first, T0, T0 + timedelta(hours=1))
    assert catalog.get_recommendations("u1", "homepage", T0) == first
    second = [Recommendation("m2", 1, 0.8, "similar")]
    catalog.put_recommendations("u1", "homepage", second, T0, T0 + timedelta(hours=1))
    assert catalog.get_recommendations("u1", "homepage", T0) == second
    assert catalog.get_recommendations("u1", "homepage", T0 + timedelta(hours=2)) == []
    assert catalog.get_recommendations("u1", "similar", T0) == []
    assert catalog.counts()["precomputed_recommendations"] == 1


def test_ids_alone_add_new_rows_and_leave_existing_ones(catalog: CatalogStore) -> None:
    catalog.write(users=pd.DataFrame({"user_id": ["u1"], "language": ["fr"]}))
    catalog.write(users=pd.DataFrame({"user_id": ["u1", "u2"]}))
    u1, u2 = catalog.get_user("u1"), catalog.get_user("u2")
    assert u1 is not None and u1["language"] == "fr"
    assert u2 is not None and u2["is_new_user"] is True and u2["total_interactions"] == 0


def test_upsert_user_creates_then_updates_keeping_unspecified_values(catalog: CatalogStore) -> None:
    row, created = catalog.upsert_user("u1", preferred_categories=["Drama", "Comedy"], language="fr", country="FR")
    assert created is True
    assert (row["user_id"], row["preferred_categories"], row["language"], row["country"]) == \
        ("u1", ["Drama", "Comedy"], "fr", "FR")
    assert row["onboarding_completed"] is True and row["is_new_user"] is True and row["total_interactions"] == 0
    assert row["created_at"] is not None and row["last_active_at"] is None
    again, created = catalog.upsert_user("u1", language="de")
    assert created is False
    assert again == {**row, "language": "de"}, "what was not given is kept, created_at too"
    cleared, _ = catalog.upsert_user("u1", preferred_categories=[])
    assert cleared["preferred_categories"] == [] and cleared["language"] == "de"
    assert catalog.get_user("u1") == cleared and catalog.counts()["users"] == 1


def test_upsert_user_keeps_what_events_and_imports_wrote(catalog: CatalogStore) -> None:
    catalog.write(users=pd.DataFrame({"user_id": ["u1"], "last_active_at": [T0], "total_interactions": [12],
                                      "engagement_level": ["low"], "is_new_user": [False]}))
    row, created = catalog.upsert_user("u1", preferred_categories=["Drama"])
    assert created is False and row["preferred_categories"] == ["Drama"]
    assert (row["last_active_at"], row["total_interactions"], row["is_new_user"]) == (T0, 12, False)


def test_long_user_ids_round_trip(catalog: CatalogStore) -> None:
    user = "u" * 128  # as long as the API and the event topic take
    catalog.upsert_user(user, language="en")
    catalog.register_users({user: T0})
    catalog.put_recommendations(user, "homepage", [Recommendation("m1", 1, 0.5)], T0, T0 + timedelta(hours=1))
    stored = catalog.get_user(user)
    assert stored is not None and stored["language"] == "en" and stored["last_active_at"] == T0
    assert catalog.get_recommendations(user, "homepage", T0) == [Recommendation("m1", 1, 0.5)]


def test_register_users_adds_bare_rows_and_only_moves_last_active_forward(catalog: CatalogStore) -> None:
    catalog.upsert_user("known", preferred_categories=["Drama"], language="fr")
    catalog.register_users({"known": T0, "new": T0 + timedelta(minutes=1)})
    new, known = catalog.get_user("new"), catalog.get_user("known")
    assert new is not None and known is not None
    assert (new["created_at"], new["last_active_at"]) == (T0 + timedelta(minutes=1),) * 2
    assert new["preferred_categories"] is None and new["is_new_user"] is True and new["total_interactions"] == 0
    assert new["onboarding_completed"] is False
    assert known["last_active_at"] == T0 and known["preferred_categories"] == ["Drama"] and known["language"] == "fr"
    catalog.register_users({"known": T0, "new": T0 + timedelta(minutes=1)})  # the same batch again
    assert catalog.get_user("new") == new and catalog.get_user("known") == known
    catalog.register_users({"known": T0 - timedelta(days=1)})  # an older event, delivered late
    assert catalog.get_user("known") == known
    catalog.register_users({"known": T0 + timedelta(days=1)})
    moved = catalog.get_user("known")
    assert moved == {**known, "last_active_at": T0 + timedelta(days=1)}
    catalog.register_users({})
    assert catalog.counts()["users"] == 2


def test_upsert_item_creates_then_updates_keeping_unspecified_values(catalog: CatalogStore) -> None:
    before = datetime.now(UTC)
    row, created = catalog.upsert_item("n1", title="New thing", category="Drama", subcategory="Noir",
                                       tags=["dark", "city"], content_features={"year": 2026, "cast": ["a"]},
                                       description="first cut")
    assert created is True
    assert (row["item_id"], row["title"], row["category"], row["subcategory"], row["tags"]) == \
        ("n1", "New thing", "Drama", "Noir", ["dark", "city"])
    assert row["content_features"] == {"year": 2026, "cast": ["a"]} and row["description"] == "first cut"
    assert row["is_active"] is True and row["interaction_count"] == 0 and row["view_count"] == 0
    assert row["created_at"] >= before - timedelta(seconds=1) and row["updated_at"] >= row["created_at"]
    again, created = catalog.upsert_item("n1", is_active=False, tags=[])
    assert created is False
    assert again == {**row, "is_active": False, "tags": [], "updated_at": again["updated_at"]}, \
        "what was not given is kept, created_at too"
    assert again["updated_at"] >= row["updated_at"]
    assert catalog.get_item("n1") == again and catalog.counts()["items"] == 1


def test_upsert_item_keeps_popularity_and_what_an_import_wrote(catalog: CatalogStore) -> None:
    catalog.write(items=items_frame())
    catalog.write(item_stats=pd.DataFrame({"item_id": ["m1"], "view_count": [3], "interaction_count": [7],
                                           "avg_rating": [4.25], "first_seen": [T0]}))
    row, created = catalog.upsert_item("m1", title="Toy Story")
    assert created is False and row["title"] == "Toy Story"
    assert (row["view_count"], row["interaction_count"], row["avg_rating"]) == (3, 7, 4.25)
    assert row["tags"] == ["Animation", "Children"] and row["created_at"] == T0


def test_a_new_item_without_a_title_is_refused_and_nothing_is_written(catalog: CatalogStore) -> None:
    from recsys.stores.catalog import IncompleteItemError

    with pytest.raises(IncompleteItemError, match="title") as caught:
        catalog.upsert_item("n2", category="Drama")
    assert caught.value.field == "title"
    assert catalog.get_item("n2") is None and catalog.counts()["items"] == 0


def test_items_changed_since_lists_the_written_items_oldest_write_first(catalog: CatalogStore) -> None:
    empty = catalog.items_changed_since(None)
    assert empty.empty and list(empty.columns) == list(ITEM_COLUMNS)
    catalog.write(items=items_frame())  # an import: every row written gets updated_at now
    imported = catalog.items_changed_since(None)
    assert sorted(imported["item_id"]) == ["m1", "m2"] and imported["updated_at"].notna().all()
    assert imported["tags"].tolist() == [["Animation", "Children"], ["Action"]]
    mark = max(imported["updated_at"]).to_pydatetime() + timedelta(microseconds=1)
    assert catalog.items_changed_since(mark).empty
    time.sleep(0.01)
    catalog.upsert_item("n1", title="New", category="Action", tags=["Action", "new"])
    catalog.upsert_item("m1", is_active=False)
    changed = catalog.items_changed_since(mark, columns=("category", "tags", "is_active", "created_at"))
    assert list(changed.columns) == ["item_id", "category", "tags", "is_active", "created_at"]
    assert changed["item_id"].tolist() == ["n1", "m1"], "oldest write first"
    assert changed["is_active"].tolist() == [True, False]
    assert changed["tags"].tolist() == [["Action", "new"], ["Animation", "Children"]]
    assert changed["category"].tolist() == ["Action", "Animation"] and changed["created_at"].iloc[1] == T0
    assert catalog.items_changed_since(None)["item_id"].tolist() == ["m2", "n1", "m1"]
    with pytest.raises(ValueError, match="unknown item columns"):
        catalog.items_changed_since(None, columns=("nope",))
