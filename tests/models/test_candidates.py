"""Candidate generation and the edge cases that break multi-stage recommenders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from recsys.models.candidates import CandidateGenerator, CandidateTables, Quotas, build_tables
from recsys.models.item_index import ItemIndex
from recsys.models.neighbours import ItemNeighbours

NOW = datetime(2024, 5, 1, tzinfo=UTC)
CATEGORIES = ["drama", "comedy", "horror"]


def catalog(n: int = 30) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": [f"i{k}" for k in range(n)],
        "category": [CATEGORIES[k % 3] for k in range(n)],
        "tags": [[f"t{k % 3}", f"x{k % 5}"] for k in range(n)],
        "is_active": [k != 4 for k in range(n)],  # i4 is withdrawn
    })


def vectors_for(items: pd.DataFrame, extra: int = 0) -> tuple[np.ndarray, list[str]]:
    """Items of a category point the same way; `extra` index-only ids the catalog does not know."""
    rng = np.random.default_rng(0)
    axes = {c: np.eye(8)[k] for k, c in enumerate(CATEGORIES)}
    rows = [axes[c] + 0.1 * rng.standard_normal(8) for c in items["category"]]
    rows += [np.eye(8)[0] for _ in range(extra)]
    matrix = np.array(rows, dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix, list(items["item_id"]) + [f"ghost{k}" for k in range(extra)]


def events_for(items: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for k, item in enumerate(items["item_id"]):
        for repeat in range(30 - k):  # i0 most popular
            rows.append({"user_id": f"u{repeat}", "item_id": item, "event_time": NOW - timedelta(days=k % 10)})
    return pd.DataFrame(rows).assign(event_time=lambda f: pd.to_datetime(f["event_time"], utc=True))


@pytest.fixture
def tables() -> CandidateTables:
    items = catalog()
    matrix, ids = vectors_for(items, extra=3)
    index = ItemIndex.build(matrix, ids, model_version="test", data_start=NOW - timedelta(days=30), data_end=NOW)
    return build_tables(items, events_for(items), index, matrix, NOW)


def drama_user() -> np.ndarray:
    return np.eye(8, dtype=np.float32)[0]


def test_a_known_user_gets_their_taste_with_provenance(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables, Quotas(collaborative=5, content=5, popularity=5, trending=2))
    found = generator.generate(drama_user(), recent_items=["i0", "i3"], consumed={"i0", "i3"})
    ids = [c.item_id for c in found]
    assert len(ids) == len(set(ids)) and not {"i0", "i3"} & set(ids)
    collaborative = [c for c in found if "collaborative" in c.sources]
    assert collaborative and all(tables.items.at[c.item_id, "category"] == "drama" for c in collaborative)
    assert all(set(c.sources) <= {"collaborative", "content", "popularity", "trending"} for c in found)
    assert not any("similar_items" in c.sources for c in found)  # no neighbours built: that source is empty
    assert found == sorted(found, key=lambda c: -c.score)


def test_unknown_user_uses_onboarding_categories_else_popular(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables, Quotas(collaborative=5, content=5, popularity=6, trending=0))
    onboarded = generator.generate(None, recent_items=[], consumed=set(), onboarding_categories=["horror"])
    assert onboarded and all(tables.items.at[c.item_id, "category"] == "horror" for c in onboarded)
    cold = generator.generate(None, recent_items=[], consumed=set())
    assert [c.item_id for c in cold][:3] == ["i0", "i1", "i2"]  # most popular first


def test_one_interaction_is_enough(tables: CandidateTables) -> None:
    found = CandidateGenerator(tables).generate(None, recent_items=["i5"], consumed={"i5"})
    assert found and "i5" not in {c.item_id for c in found}
    assert any("content" in c.sources for c in found)


def test_quotas_larger_than_the_index_and_padding(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables, Quotas(collaborative=1000, content=1000, popularity=1000, trending=1000))
    found = generator.generate(drama_user(), recent_items=["i1"], consumed=set())
    ids = [c.item_id for c in found]
    assert len(ids) == len(set(ids)) and len(ids) <= len(tables.items)
    assert "-1" not in ids and not any(i.startswith("ghost") for i in ids)  # index-only ids are dropped
    assert "i4" not in ids  # inactive


def test_k_limits_the_merged_list(tables: CandidateTables) -> None:
    found = CandidateGenerator(tables).generate(drama_user(), recent_items=[], consumed=set(), k=7)
    assert len(found) == 7


def test_keep_returns_the_head_of_the_same_merge_with_the_same_provenance(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables, Quotas(collaborative=8, content=8, popularity=6, trending=3))
    args = (drama_user(), ["i1", "i7"], {"i1", "i7"})
    everything = generator.generate(*args)
    assert len(everything) > 6
    assert generator.generate(*args, keep=6) == everything[:6]
    assert generator.generate(*args, keep=1000) == everything
    assert generator.generate(*args, k=12, keep=4) == generator.generate(*args, k=12)[:4]


def test_an_explicit_k_is_filled_beyond_the_quotas(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables, Quotas(collaborative=3, content=0, popularity=0, trending=0))
    assert len(generator.generate(drama_user(), recent_items=[], consumed=set())) == 3
    filled = generator.generate(drama_user(), recent_items=[], consumed=set(), k=12)
    assert len(filled) == 12 and all("collaborative" in c.sources for c in filled)


def test_similar_items_source_keeps_provenance_and_filters(tables: CandidateTables) -> None:
    events = events_for(catalog())
    tables.neighbours = ItemNeighbours.build(events, neighbours=10)
    generator = CandidateGenerator(tables, Quotas(collaborative=0, similar_items=6, content=0, popularity=0,
                                                  trending=0))
    found = generator.generate(None, recent_items=["i3", "i5"], consumed={"i3", "i5", "i6"})
    ids = [c.item_id for c in found]
    assert ids and all(set(c.sources) == {"similar_items"} for c in found)
    assert not {"i3", "i5", "i6", "i4"} & set(ids)  # consumed and inactive
    assert len(ids) <= 6 and found == sorted(found, key=lambda c: -c.score)


def test_an_item_proposed_by_several_sources_counts_once_per_source(tables: CandidateTables) -> None:
    generator = CandidateGenerator(tables, Quotas(collaborative=3, similar_items=0, content=0, popularity=0,
                                                  trending=0))
    repeated = [("i1", 0.9), ("i1", 0.8), ("i2", 0.7), ("i5", 0.6)]
    merged = generator.merge({"collaborative": repeated}, consumed=set(), k=None)
    assert [c.item_id for c in merged] == ["i1", "i2", "i5"] and merged[0].sources == {"collaborative": 0.9}
