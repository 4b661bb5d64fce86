"""The pipeline's new-items watch on a tiny world: catalog changes swapped into serving without retraining,
copy-on-write, and a re-published artifact that wins with the catalog's changes re-applied on top."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from bento_services.pipeline.contracts import RecommendationRequest
from bento_services.pipeline.pipeline import RecommendationPipeline
from bento_services.pipeline.retrieve import load_serving_tables
from recsys.backends import open_catalog
from recsys.models.item_index import ItemIndex
from tests.bento_services.pipeline_data import World, build_world, category_vectors
from tests.conftest import make_settings


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(make_settings("local", tmp_path), tmp_path)


def pipeline_of(world: World) -> RecommendationPipeline:
    """A pipeline without background threads: the test calls `pick_up_items` itself."""
    return RecommendationPipeline(world.settings, load_serving_tables(world.settings, world.folder), None, None)


def upsert(world: World, item_id: str, **fields: object) -> None:
    with open_catalog(world.settings) as catalog:
        catalog.upsert_item(item_id, **fields)  # type: ignore[arg-type]


def drama(world: World) -> tuple[str, list[str], list[str]]:
    """The largest category, three of its items and their tags."""
    items = world.items.set_index("item_id")
    category = str(items["category"].value_counts().index[0])
    some = [str(i) for i in items.index[items["category"] == category][:3]]
    return category, some, list(dict.fromkeys(str(t) for i in some for t in items.at[i, "tags"]))


def test_new_and_changed_items_are_swapped_in_and_the_tables_requests_hold_stay_as_they_were(world: World) -> None:
    pipeline = pipeline_of(world)
    assert pipeline.pick_up_items() == 0, "the catalog agrees with the loaded tables"
    before_tables, before_retriever, before_post = pipeline.tables, pipeline.retriever, pipeline.post
    assert before_retriever is not None
    category, some, tags = drama(world)
    withdrawn = str(world.events["item_id"].value_counts().index[0])
    upsert(world, "fresh-1", title="Fresh", category=category, tags=tags)
    upsert(world, withdrawn, is_active=False)

    assert pipeline.pick_up_items() == 2
    retriever = pipeline.retriever
    assert retriever is not None and pipeline.tables is not before_tables and retriever is not before_retriever
    assert "fresh-1" in retriever.tables.vectors and "fresh-1" in retriever.tables.index.item_ids
    assert retriever.tables.by_tag[tags[0]][0] == "fresh-1" and retriever.generator.category["fresh-1"] == category
    attributes = pipeline.tables.attributes
    assert "fresh-1" in attributes.fresh and attributes.category["fresh-1"] == category
    assert withdrawn in attributes.inactive and not pipeline.post.allowed(withdrawn, set())
    user_vector = retriever.fold_in(some)
    assert user_vector is not None
    assert retriever.embedding_scores(user_vector, ["fresh-1"])[0] > 0.8, "scored like any item"
    found = retriever.retrieve(user_vector, some, set(some), [])
    assert "fresh-1" in {c.item_id for c in found} and withdrawn not in {c.item_id for c in found}
    assert retriever.fold_in(["fresh-1"]) is not None

    # What requests in flight hold is exactly as it was.
    assert "fresh-1" not in before_retriever.tables.vectors and "fresh-1" not in before_retriever.tables.index.item_ids
    assert "fresh-1" not in before_tables.attributes.category and withdrawn not in before_tables.attributes.inactive
    assert before_post.allowed(withdrawn, set()) and before_retriever.embedding_scores(user_vector, ["fresh-1"])[0] == 0
    assert "fresh-1" not in {c.item_id for c in before_retriever.retrieve(user_vector, some, set(some), [])}

    current = pipeline.tables
    assert pipeline.pick_up_items() == 0 and pipeline.tables is current, "re-reading unchanged rows swaps nothing"
    upsert(world, "fresh-1", is_active=False)
    assert pipeline.pick_up_items() == 1
    answer = pipeline.recommend(RecommendationRequest(world.warm_user, n=80))
    assert {"fresh-1", withdrawn}.isdisjoint(i.item_id for i in answer.items)
    pipeline.close()


def test_an_item_nothing_resembles_is_skipped_with_one_log_line(world: World, caplog: pytest.LogCaptureFixture
                                                                 ) -> None:
    pipeline = pipeline_of(world)
    upsert(world, "lonely", title="Alone", category="nowhere", tags=["never-seen"])
    with caplog.at_level(logging.WARNING, logger="bento_services.pipeline.pipeline"):
        assert pipeline.pick_up_items() == 0
        assert pipeline.pick_up_items() == 0
    assert [r.getMessage() for r in caplog.records if "lonely" in r.getMessage()] == [
        "item lonely not placed in serving: no catalog item with a vector shares its tags or category (tried again "
        "when its row changes)"]
    assert pipeline.retriever is not None and "lonely" not in pipeline.retriever.tables.vectors
    category, _, _ = drama(world)
    upsert(world, "lonely", category=category)  # its row changed: tried again, and now its category places it
    assert pipeline.pick_up_items() == 1 and "lonely" in pipeline.retriever.tables.vectors
    pipeline.close()


def test_a_republished_artifact_wins_and_the_catalog_changes_are_reapplied_on_top(world: World) -> None:
    pipeline = pipeline_of(world)
    category, _, tags = drama(world)
    withdrawn = str(world.items["item_id"].iloc[5])
    upsert(world, "fresh-1", title="Fresh", category=category, tags=tags)
    upsert(world, "fresh-2", title="Also fresh", category=category, tags=tags[:1])
    upsert(world, withdrawn, is_active=False)
    assert pipeline.pick_up_items() == 3

    # A new artifact: the same catalog's items with other vectors, and fresh-2 learned by the nightly run.
    items = world.items
    vectors = np.vstack([-category_vectors(items), np.eye(len(category_vectors(items)[0]), dtype=np.float32)[:1]])
    folder = world.settings.data_path / "models" / "v-two"
    ItemIndex.build(vectors, [*items["item_id"].astype(str), "fresh-2"], model_version="v-two",
                    data_start=datetime(2024, 1, 1, tzinfo=UTC), data_end=datetime(2024, 3, 1, tzinfo=UTC),
                    version="v-two").save(folder / "item_index")
    assert pipeline.refresh(folder)
    retriever = pipeline.retriever
    assert retriever is not None and pipeline.tables.version == "v-two" and pipeline.tables.folder_name == "v-two"
    loaded = dict(zip(items["item_id"].astype(str), -category_vectors(items)))
    some = str(items["item_id"].iloc[0])
    np.testing.assert_allclose(retriever.tables.vectors[some], loaded[some], atol=1e-6)  # the artifact's vectors
    np.testing.assert_allclose(retriever.tables.vectors["fresh-2"], vectors[-1], atol=1e-6)  # learned: it wins
    assert retriever.tables.index.added_ids == ["fresh-1"], "re-placed by content on the new vectors"
    expected = retriever.generator.content_vector(tags, category)
    assert expected is not None and float(retriever.tables.vectors["fresh-1"] @ expected) > 0.99
    assert withdrawn in pipeline.tables.attributes.inactive and withdrawn not in retriever.generator.servable
    assert {"fresh-1", "fresh-2"} <= retriever.generator.servable
    assert pipeline.pick_up_items() == 0, "nothing left to change"
    pipeline.close()
