"""The request path's merge over item codes (`recsys.models.fusion.fuse`) gives exactly the merge over ids
(`CandidateGenerator.merge`): same items, order, fused scores and provenance, on random tables and requests, after
catalog changes too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from recsys.models.candidates import CandidateGenerator, ItemUpdate, Quotas, build_tables
from recsys.models.fusion import CodeBook, summed
from recsys.models.item_index import ItemIndex
from recsys.models.neighbours import ItemNeighbours

NOW = datetime(2024, 5, 1, tzinfo=UTC)


def random_generator(seed: int) -> CandidateGenerator:
    """200 catalog items (some inactive) in 4 categories with tags; the index also holds ids the catalog lacks,
    and the events name items neither knows (the popular and trending lists then do too)."""
    rng = np.random.default_rng(seed)
    n = 200
    items = pd.DataFrame({
        "item_id": [f"m{k}" for k in range(n)],
        "category": [f"c{k % 4}" for k in range(n)],
        "tags": [[f"t{t}" for t in rng.choice(12, size=rng.integers(0, 4), replace=False)] for _ in range(n)],
        "is_active": rng.random(n) > 0.1,
    })
    ids = list(items["item_id"]) + [f"ghost{k}" for k in range(10)]
    matrix = rng.standard_normal((len(ids), 8)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    index = ItemIndex.build(matrix, ids, model_version="t", data_start=NOW - timedelta(days=30), data_end=NOW)
    universe = ids + [f"stranger{k}" for k in range(5)]
    draws = rng.zipf(1.3, 6_000) % len(universe)  # skewed: equal counts, and so ties, among the tail
    events = pd.DataFrame({
        "user_id": [f"u{k}" for k in rng.integers(0, 300, len(draws))],
        "item_id": [universe[d] for d in draws],
        "event_time": pd.to_datetime([NOW - timedelta(hours=int(h)) for h in rng.integers(0, 24 * 20, len(draws))],
                                     utc=True),
    })
    tables = build_tables(items, events, index, matrix, NOW, neighbours=ItemNeighbours.build(events, neighbours=40))
    return CandidateGenerator(tables, Quotas(collaborative=30, similar_items=40, content=15, popularity=8,
                                             trending=8), nprobe=4)


def changed(generator: CandidateGenerator, seed: int) -> CandidateGenerator:
    """New items placed with vectors, some withdrawn, some retagged and moved to another category."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((5, 8)).astype(np.float32)
    placed = [ItemUpdate(f"new{k}", "c1", ("t3",), True, vectors[k] / np.linalg.norm(vectors[k])) for k in range(5)]
    withdrawn = [ItemUpdate(f"m{k}", "c0", (), False) for k in (0, 4, 8)]
    moved = [ItemUpdate(f"m{k}", "c3", ("t1", "t9"), True) for k in (1, 13)]
    return generator.with_items(placed + withdrawn + moved)


def reference(generator: CandidateGenerator, user_vector: np.ndarray | None, recent: list[str], consumed: set[str],
              onboarding: list[str], keep: int | None) -> list:
    """The merge over ids, of the same sources' (id, score) lists."""
    categories = generator._categories(recent) or onboarding
    lists = {"collaborative": generator.collaborative(user_vector),
             "similar_items": generator.similar_items(recent, consumed),
             "content": generator.content(recent, categories), "popularity": generator.popularity(categories),
             "trending": generator.trending()}
    return generator.merge(lists, consumed, None, keep)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_merge_over_codes_equals_the_merge_over_ids(seed: int) -> None:
    base = random_generator(seed)
    rng = np.random.default_rng(seed + 100)
    for generator in (base, changed(base, seed)):
        known = list(generator.book.ids)
        for request in range(60):
            recent = [known[i] for i in rng.integers(0, len(known), rng.choice([0, 1, 3, 25, 120]))]
            consumed = set(recent) | {known[i] for i in rng.integers(0, len(known), rng.choice([0, 15]))}
            user_vector = None if request % 5 == 0 else rng.standard_normal(8).astype(np.float32)
            onboarding = ["c2", "c0"] if request % 7 == 0 else []
            keep = [None, 20, 1, 5][request % 4]
            fast = generator.generate(user_vector, recent, consumed, onboarding_categories=onboarding, keep=keep)
            assert fast == reference(generator, user_vector, recent, consumed, onboarding, keep)
            assert fast, "every request here has at least the popular and trending sources"


def test_a_catalog_change_leaves_the_book_requests_read_untouched() -> None:
    base = random_generator(4)
    before = (list(base.book.ids), base.book.servable.copy(), base._index_codes.copy())
    after = changed(base, 4)
    assert (list(base.book.ids), base.book.servable.tolist(), base._index_codes.tolist()) == (
        before[0], before[1].tolist(), before[2].tolist())
    assert after.book.ids[: len(before[0])] == before[0]  # codes held stay
    assert not after.book.servable[after.book.code["m4"]] and after.book.servable[after.book.code["new2"]]
    assert after.book.servable[after.book.code["m1"]]  # moved, and active as given


def test_summed_orders_by_total_then_first_appearance() -> None:
    codes, totals = summed(np.array([5, 3, 5, 7, 3, 9]), np.array([1.0, 0.5, 1.0, 2.0, 1.5, 2.0]))
    assert codes.tolist() == [5, 3, 7, 9] and totals.tolist() == [2.0, 2.0, 2.0, 2.0]
    codes, _ = summed(np.array([4, 2, 2]), np.array([1.0, 0.75, 0.5]))
    assert codes.tolist() == [2, 4]


def test_the_book_blocks_the_unservable_the_consumed_and_unknown_codes() -> None:
    book = CodeBook.of([["a", "b", "c"], ["c", "d"]], servable=["a", "c", "d", "zz"])
    blocked = book.blocked({"d", "unknown"})
    assert book.ids == ["a", "b", "c", "d"]
    assert blocked.tolist() == [False, True, False, True, True]  # the last entry: code -1
