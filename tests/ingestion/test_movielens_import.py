"""ml-latest-small end to end, on the embedded stores and on PostgreSQL, Cassandra and the lake."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from ingestion.importer import Importer
from ingestion.movielens import MovieLensSource
from recsys.stores import CatalogStore, InteractionStore, Lake

ITEMS, USERS, RATINGS, TAGS = 9_742, 610, 100_836, 3_683


def counts(catalog: CatalogStore, interactions: InteractionStore, lake: Lake) -> dict[str, int]:
    table = lake.interactions(columns=["action_type"])
    by_action = {row["values"]: row["counts"] for row in pc.value_counts(table["action_type"]).to_pylist()}
    return {**catalog.counts(), **interactions.counts(), "lake": table.num_rows,
            "lake_rate": by_action.get("rate", 0), "lake_tag": by_action.get("tag", 0)}


def test_import_counts_end_to_end_and_reimport_changes_nothing(
    movielens_dir: Path, catalog: CatalogStore, interactions: InteractionStore, lake: Lake
) -> None:
    importer = Importer(catalog, interactions, lake, show_progress=False)
    report = importer.run(MovieLensSource(movielens_dir))
    expected = {
        "users": USERS, "items": ITEMS, "precomputed_recommendations": 0,
        "interactions": RATINGS + TAGS, "item_interactions": RATINGS + TAGS,
        "lake": RATINGS + TAGS, "lake_rate": RATINGS, "lake_tag": TAGS,
    }
    assert report.events_read == RATINGS + TAGS and report.events_new_in_lake == RATINGS + TAGS
    assert counts(catalog, interactions, lake) == expected

    again = importer.run(MovieLensSource(movielens_dir))
    assert again.events_new_in_lake == 0
    assert counts(catalog, interactions, lake) == expected
    assert len(list(lake.catalog_path.glob("items/snapshot=*"))) == 1


def test_movies_ratings_and_tags_map_to_items_users_and_events(
    movielens_dir: Path, catalog: CatalogStore, interactions: InteractionStore, lake: Lake
) -> None:
    Importer(catalog, interactions, lake, show_progress=False).run(MovieLensSource(movielens_dir))
    toy_story = catalog.get_item("1")
    assert toy_story is not None
    assert toy_story["title"] == "Toy Story (1995)"
    assert (toy_story["category"], toy_story["subcategory"]) == ("Adventure", "Animation")
    assert toy_story["tags"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy_story["content_features"]["year"] == 1995
    assert toy_story["content_features"]["imdb_id"] == "tt0114709"
    assert toy_story["content_features"]["tmdb_id"] == "862"
    assert toy_story["interaction_count"] > 200 and 3.5 < toy_story["avg_rating"] < 4.5
    user = catalog.get_user("1")
    assert user is not None and user["total_interactions"] == 232 and user["engagement_level"] == "high"
    # user 2 tagged movie 60756 three times within seconds; every tag is its own event.
    history = interactions.user_events("2", limit=1000)
    tags = history[(history["item_id"] == "60756") & (history["action_type"] == "tag")]
    assert sorted(tags["context"]) == ['{"tag":"Highly quotable"}', '{"tag":"funny"}', '{"tag":"will ferrell"}']
    rating = history[(history["item_id"] == "318") & (history["action_type"] == "rate")]
    assert rating["value"].tolist() == [3.0]
