"""Post-processing: business rules, boosts, freshness, diversity, order and explanations."""

from __future__ import annotations

import numpy as np

from bento_services.pipeline.postprocess import PostProcessor, main_source
from bento_services.pipeline.retrieve import ItemAttributes
from recsys.settings import ServingSettings

IDS = [f"i{k}" for k in range(10)]
CATEGORY = {f"i{k}": ("drama" if k < 6 else "comedy") for k in range(10)}


def processor(**serving: object) -> PostProcessor:
    attributes = ItemAttributes(category=dict(CATEGORY), inactive={"i1"}, fresh={"i9"})
    settings = ServingSettings(**{"freshness_boost": 0.0, **serving})  # type: ignore[arg-type]
    return PostProcessor(attributes, settings)


def scores() -> np.ndarray:
    return np.linspace(1.0, 0.1, 10)  # i0 best ... i9 worst


def test_seen_inactive_denied_and_not_interested_items_never_appear() -> None:
    post = processor(deny_list=["i2"])
    items = post.apply(IDS, scores(), ["collaborative"] * 10, excluded={"i0", "i3"}, n=10)
    ids = [i.item_id for i in items]
    assert not {"i0", "i1", "i2", "i3"} & set(ids) and len(ids) == 6


def test_order_ranks_scores_source_and_explanation() -> None:
    sources = ["collaborative", "content", "popularity", "trending"] * 3
    items = processor().apply(IDS, scores(), sources[:10], excluded=set(), n=8)
    assert [i.rank for i in items] == list(range(1, 9))
    assert [i.score for i in items] == sorted((i.score for i in items), reverse=True)
    assert items[0].item_id == "i0" and items[0].source == "collaborative" and items[0].explanation == "similar_users"
    explanations = {i.source: i.explanation for i in items}
    assert explanations.get("content") == "similar_items" and explanations.get("trending") == "trending"
    assert explanations.get("popularity") == "popular_in_category"


def test_boosts_and_freshness_lift_items() -> None:
    boosted = processor(boosts={"i8": 100.0}).apply(IDS, scores(), ["content"] * 10, set(), n=3)
    assert boosted[0].item_id == "i8"
    fresh = processor(freshness_boost=200.0).apply(IDS, scores(), ["content"] * 10, set(), n=1)
    assert fresh[0].item_id == "i9"


def test_diversity_mixes_categories_and_the_variant_boost_mixes_more() -> None:
    base = [i.item_id for i in processor().apply(IDS, scores(), ["content"] * 10, set(), n=5)]
    boosted = [i.item_id for i in processor().apply(IDS, scores(), ["content"] * 10, set(), n=5, diversity_boost=5.0)]
    comedy = {f"i{k}" for k in range(6, 10)}
    assert len(comedy & set(boosted)) > len(comedy & set(base))
    assert boosted[0] == "i0"


def test_main_source_prefers_the_heaviest_fusion_weight() -> None:
    assert main_source({"trending": 9.0, "collaborative": 0.1}) == "collaborative"
    assert main_source({"popularity": 1.0, "content": 0.2}) == "content"
    assert main_source({}) == "popularity"


def test_nothing_allowed_gives_an_empty_list() -> None:
    assert processor().apply(["i1"], np.array([1.0]), ["content"], set(), n=5) == []


def greedy_by_argmax(categories: list[str], scores: np.ndarray, n: int,
                     strength: float) -> tuple[list[int], list[float]]:
    """The diversity re-rank as written down: each pick, every remaining item's score divided by 1 + strength x
    its category's picks so far, the first largest taken."""
    codes = np.array([sorted(set(categories)).index(c) for c in categories])
    picks = np.zeros(codes.max() + 1)
    remaining, order, final = scores.astype(np.float64).copy(), [], []
    for _ in range(min(n, len(scores))):
        effective = remaining / (1.0 + strength * picks[codes])
        best = int(np.argmax(effective))
        order.append(best)
        final.append(float(effective[best]))
        remaining[best] = -np.inf
        picks[codes[best]] += 1
    return order, final


def test_the_diversity_heap_picks_exactly_as_the_argmax_greedy() -> None:
    rng = np.random.default_rng(5)
    for case in range(300):
        size = int(rng.integers(1, 120))
        ids = [f"x{k}" for k in range(size)]
        names = [f"c{c}" for c in rng.integers(0, int(rng.integers(1, 12)), size)]
        values = rng.choice([0.2, 0.5, 0.5, 1.0], size) if case % 3 == 0 else rng.random(size)  # ties too
        strength, n = float(rng.choice([0.05, 0.5, 3.0])), int(rng.integers(1, 60))
        post = PostProcessor(ItemAttributes(category=dict(zip(ids, names))), ServingSettings())
        assert post._diverse_order(ids, values, n, strength) == greedy_by_argmax(names, values, n, strength)
