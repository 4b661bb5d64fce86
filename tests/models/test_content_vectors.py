"""Items placed after the candidate tables were built: the content vector, the index beside the built one, and
the generator's copy-on-write update."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from recsys.models.candidates import (
    CONTENT_MEMBERS,
    TAG_OVER_CATEGORY,
    CandidateGenerator,
    CandidateTables,
    ItemUpdate,
    Quotas,
    build_tables,
    content_vector,
)
from recsys.models.item_index import IndexInputError, ItemIndex
from tests.models.test_candidates import NOW, catalog, events_for, vectors_for


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


AXES = np.eye(4, dtype=np.float32)
VECTORS = {"a1": AXES[0], "a2": AXES[0], "b1": AXES[1], "c1": AXES[2], "c2": AXES[2], "d1": AXES[3]}


def test_the_content_vector_is_the_tags_mean_weighing_twice_the_categorys() -> None:
    by_tag = {"x": ["a1", "b1"], "y": ["a1"], "z": ["ghost"]}  # a1 shares two tags, b1 one; ghost has no vector
    got = content_vector(["x", "y", "z"], ["c1", "c2", "unknown"], VECTORS, by_tag)
    tags_mean = (2 * AXES[0] + 1 * AXES[1]) / 3  # each weighing the tags it shares
    expected = unit(TAG_OVER_CATEGORY * tags_mean + AXES[2])
    assert got is not None and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-6


def test_without_a_shared_tag_the_category_alone_places_it_and_with_nothing_it_is_not_placed() -> None:
    by_tag = {"x": ["a1"]}
    np.testing.assert_allclose(content_vector(["new-tag"], ["c1", "d1"], VECTORS, by_tag),
                               unit(AXES[2] + AXES[3]), atol=1e-6)
    np.testing.assert_allclose(content_vector(["x"], [], VECTORS, by_tag), AXES[0], atol=1e-6)
    assert content_vector(["new-tag"], ["ghost"], VECTORS, by_tag) is None
    assert content_vector([], [], VECTORS, by_tag) is None
    assert content_vector(["x"], [], {"a1": np.zeros(4, dtype=np.float32)}, by_tag) is None, "no direction"


def test_the_content_vector_reads_at_most_content_members_per_tag() -> None:
    many = {f"m{k}": AXES[0] for k in range(CONTENT_MEMBERS)} | {"late": AXES[1]}
    by_tag = {"x": [*list(many)[:CONTENT_MEMBERS], "late"]}
    np.testing.assert_allclose(content_vector(["x"], [], many, by_tag), AXES[0], atol=1e-6)


@pytest.fixture
def tables() -> CandidateTables:
    items = catalog()
    matrix, ids = vectors_for(items)
    index = ItemIndex.build(matrix, ids, model_version="test", data_start=NOW - timedelta(days=30), data_end=NOW)
    return build_tables(items, events_for(items), index, matrix, NOW)


def test_the_generator_places_a_new_item_without_touching_the_one_requests_read(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables, Quotas(collaborative=5, content=5, popularity=0, trending=0))
    index, vectors, by_tag, servable = tables.index, tables.vectors, tables.by_tag, generator.servable
    t0_before, rows_before = list(by_tag["t0"]), len(tables.items)
    vector = generator.content_vector(["t0", "brand-new"], "drama")  # t0 and drama: i0, i3, i6, ...
    assert vector is not None
    assert float(vector @ tables.vectors["i0"]) > 0.95, "next to the drama items"
    placed = generator.with_items([ItemUpdate("n1", "drama", ("t0", "brand-new"), True, vector)])

    # The new generator: in the index, the vectors, the tag lists (first), the catalog frame, servable.
    assert len(placed.tables.index) == len(index) + 1 and "n1" in placed.tables.vectors
    assert placed.tables.by_tag["t0"][0] == "n1" and placed.tables.by_tag["brand-new"] == ["n1"]
    assert placed.category["n1"] == "drama" and placed.tags["n1"] == ["t0", "brand-new"] and "n1" in placed.servable
    assert placed.tables.items.loc["n1", "category"] == "drama" and bool(placed.tables.items.loc["n1", "is_active"])
    drama_user = np.eye(8, dtype=np.float32)[0]
    assert "n1" in {item for item, _ in placed.collaborative(drama_user)}
    assert "n1" in {item for item, _ in placed.content(["i0"], ["drama"])}
    assert "n1" in {c.item_id for c in placed.generate(drama_user, ["i3"], {"i3"})}
    assert CandidateGenerator(placed.tables).servable == placed.servable, "the frame agrees with the sets"

    # The old one is untouched: requests holding it keep reading exactly what they read.
    assert tables.index is index and len(index) == len(placed.tables.index) - 1 and "n1" not in index.item_ids
    assert tables.vectors is vectors and "n1" not in vectors and tables.by_tag is by_tag
    assert by_tag["t0"] == t0_before and "brand-new" not in by_tag and len(tables.items) == rows_before
    assert generator.servable is servable and "n1" not in servable and "n1" not in generator.category
    assert "n1" not in {c.item_id for c in generator.generate(drama_user, ["i3"], {"i3"})}


def test_an_update_moves_tags_and_categories_and_deactivates_without_a_new_vector(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables)
    assert "i0" in tables.by_tag["t0"] and "i0" in generator.servable
    changed = generator.with_items([ItemUpdate("i0", "comedy", ("t1",), False)])
    assert changed.tables.index is tables.index, "no vector: the index is shared"
    assert "i0" not in changed.tables.by_tag["t0"] and changed.tables.by_tag["t1"][0] == "i0"
    assert changed.category["i0"] == "comedy" and "i0" not in changed.servable
    assert "i0" not in {c.item_id for c in changed.generate(np.eye(8, dtype=np.float32)[0], [], set())}
    back = changed.with_items([ItemUpdate("i0", "comedy", ("t1",), True)])
    assert "i0" in back.servable and back.tables.by_tag["t1"].count("i0") == 1
    assert generator.with_items([]) is generator


def test_a_category_without_events_places_by_all_its_items(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables)
    generator.tables.popular_by_category.pop("horror")  # no events in horror: every horror item counts
    vector = generator.content_vector([], "horror")
    assert vector is not None and float(vector @ tables.vectors["i2"]) > 0.9
    assert generator.content_vector([], "no-such-category") is None


def test_the_index_answers_with_placed_items_beside_the_built_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((50, 8)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = [f"i{k}" for k in range(50)]
    built = ItemIndex.build(matrix, ids, model_version="m", data_start=NOW, data_end=NOW, kind="flat")
    query = matrix[7]
    first = built.with_items(query[None, :] * 1.0, ["near"])
    second = first.with_items(np.array([-query]), ["far"])
    assert built.faiss_index.ntotal == 50 and len(built) == 50, "the built index is never added to"
    assert first.faiss_index is built.faiss_index and len(first) == 51 and len(second) == 52
    top = second.search(query, 3)[0]
    assert {top[0][0], top[1][0]} == {"i7", "near"} and all(item != "far" for item, _ in top)
    assert second.search(-query, 1)[0][0][0] == "far" and built.search(-query, 1)[0][0][0] != "far"
    assert len(second.search(query, 100)[0]) == 52 and second.added_ids == ["near", "far"]
    assert second.item_ids == ids + ["near", "far"]
    with pytest.raises(IndexInputError, match="already in the index"):
        second.with_items(np.array([query]), ["i3"])
    with pytest.raises(IndexInputError, match="already in the index"):
        second.with_items(np.array([query]), ["near"])
    with pytest.raises(IndexInputError, match="dimension"):
        second.with_items(np.ones((1, 4)), ["x"])
    second.save(tmp_path / "index")  # one artifact with the placed items
    loaded = ItemIndex.load(tmp_path / "index")
    assert loaded.item_ids == second.item_ids and loaded.meta.item_count == 52
    assert loaded.search(-query, 1)[0][0][0] == "far"
