"""Stage four: business rules, freshness and diversity over scored candidates, then the top N in order.

- filter: items the user has seen or marked "not interested", inactive items, the deny list;
- boosts: per-item multiplicative boosts from the settings, and `freshness_boost` for items first
  seen in the last 30 days;
- diversity: a greedy re-rank that divides an item's score by `1 + strength * (items of its
  category already picked)`; an experiment variant adds its `diversity_boost` to the strength;
- order: rank (1-based), score, the source that contributed most and its explanation type.

Scores are min-max scaled to (0, 1] first, so multiplicative rules mean the same for any scorer.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from bento_services.pipeline.contracts import RecommendedItem
from bento_services.pipeline.retrieve import ItemAttributes
from recsys.models.candidates import FusionWeights
from recsys.settings import ServingSettings
from recsys.stores.precomputed import EXPLANATIONS

BASE_DIVERSITY = 0.05
_WEIGHTS = FusionWeights().__dict__


def main_source(sources: Mapping[str, float]) -> str:
    """The source with the largest fusion weight among those that proposed the item."""
    return max(sources, key=lambda s: (_WEIGHTS.get(s, 0.0), s)) if sources else "popularity"


def explanation_of(source: str) -> str:
    return EXPLANATIONS.get(source, "popular")


class PostProcessor:
    def __init__(self, attributes: ItemAttributes, serving: ServingSettings) -> None:
        self.attributes = attributes
        self.deny = frozenset(serving.deny_list)
        self.boosts = dict(serving.boosts)
        self.freshness_boost = serving.freshness_boost

    def allowed(self, item_id: str, excluded: Collection[str]) -> bool:
        return item_id not in excluded and item_id not in self.deny and item_id not in self.attributes.inactive

    def apply(
        self, item_ids: Sequence[str], scores: np.ndarray, sources: Sequence[str], excluded: Collection[str],
        n: int, diversity_boost: float = 0.0,
    ) -> list[RecommendedItem]:
        """The top `n` allowed items after rules and diversity, best first."""
        keep = [k for k, item in enumerate(item_ids) if self.allowed(item, excluded)]
        if not keep:
            return []
        ids = [item_ids[k] for k in keep]
        adjusted = self._adjust(ids, _scale(np.asarray(scores, dtype=np.float64)[keep]))
        order, final = self._diverse_order(ids, adjusted, n, BASE_DIVERSITY + diversity_boost)
        return [
            RecommendedItem(ids[k], rank, round(score, 6), sources[keep[k]], explanation_of(sources[keep[k]]))
            for rank, (k, score) in enumerate(zip(order, final), start=1)
        ]

    def _adjust(self, ids: list[str], scores: np.ndarray) -> np.ndarray:
        fresh = self.attributes.fresh
        factors = np.fromiter(
            (self.boosts.get(item, 1.0) * (1.0 + self.freshness_boost if item in fresh else 1.0) for item in ids),
            dtype=np.float64, count=len(ids),
        )
        return scores * factors

    def _diverse_order(self, ids: list[str], scores: np.ndarray, n: int,
                       strength: float) -> tuple[list[int], list[float]]:
        """Greedy picks and each pick's score after the penalty (non-increasing: penalties only grow).

        Each pick of a category divides that category's remaining scores by `1 + strength * picks`. One penalty per
        category means a category's best remaining item is always its next in score order, so the greedy pick is
        the best of the categories' heads: a heap over categories, not a pass over every item per pick. Ties go to
        the earlier item, as an argmax over the items would.
        """
        if strength <= 0.0:
            ranked = [int(k) for k in np.argsort(-scores, kind="stable")[:n]]
            return ranked, [float(scores[k]) for k in ranked]
        categories = self.attributes.category
        values = scores.tolist()
        queues: dict[str, list[int]] = {}
        for k in np.argsort(-scores, kind="stable").tolist():  # each category's items, best first (ties: earlier)
            queues.setdefault(categories.get(ids[k], ""), []).append(k)
        heads = [(-values[queue[0]], queue[0], name, 0) for name, queue in queues.items()]
        heapq.heapify(heads)
        order: list[int] = []
        final: list[float] = []
        picked = dict.fromkeys(queues, 0)
        while heads and len(order) < n:
            negative, k, name, position = heapq.heappop(heads)
            order.append(k)
            final.append(-negative)
            picked[name] += 1
            queue = queues[name]
            if position + 1 < len(queue):
                following = queue[position + 1]
                effective = values[following] / (1.0 + strength * picked[name])
                heapq.heappush(heads, (-effective, following, name, position + 1))
        return order, final


def _scale(scores: np.ndarray) -> np.ndarray:
    """Min-max into (0, 1]: the lowest gets 0.01, the highest 1; all equal gives all 1."""
    low, high = float(scores.min()), float(scores.max())
    if high - low <= 1e-12:
        return np.ones_like(scores)
    return 0.01 + 0.99 * (scores - low) / (high - low)
