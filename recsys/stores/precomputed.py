"""Layer 1: precomputed top-N per user, written by the batch job, read before any model runs.

One interface, one implementation per backend: `precomputed_redis` (`precomputed:{user_id}`, a JSON list
with the key's TTL) for `services`, and `precomputed_catalog`, the catalog's `precomputed_recommendations`
table, which both profiles keep as the durable copy and which is `local`'s layer 1 itself. Reads go through
the layers in order (`recsys.backends.open_precomputed`), so a stopped Redis still finds the table.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from datetime import datetime

from recsys.stores.base import Store
from recsys.stores.catalog import Recommendation

KIND = "top_n"
#: Explanation type of each candidate source, and back: the layer stores only the explanation.
EXPLANATIONS = {
    "collaborative": "similar_users", "similar_items": "similar_items", "content": "similar_items",
    "popularity": "popular_in_category", "trending": "trending",
}
#: The table keeps only the explanation: item-to-item and content items both read back as `content`.
SOURCES = {explanation: source for source, explanation in EXPLANATIONS.items()} | {"popular": "popularity"}


def source_of(explanation: str | None) -> str:
    return SOURCES.get(explanation or "", "popularity")


class PrecomputedStore(Store):
    """Each user's precomputed list, best first, until it expires."""

    ttl_seconds: int

    @abstractmethod
    def put_many(self, lists: Mapping[str, list[Recommendation]], computed_at: datetime) -> int:
        """Replace each user's list; they expire `ttl_seconds` after `computed_at`. Returns users written."""

    @abstractmethod
    def get(self, user_id: str, now: datetime | None = None) -> list[Recommendation]:
        """The user's unexpired list, best first; empty when there is none."""
