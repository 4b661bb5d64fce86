""""Not interested" feedback: items a user asked never to see again, kept across restarts.

Backends: `exclusions_redis` (`services`: a set `not_interested:{user_id}`) and `exclusions_sqlite` (`local`:
one row per (user, item) in `data_dir/embedded/serving.sqlite`), chosen in `recsys.backends`; one contract
test for both (tests/stores/test_exclusions_contract.py).
"""

from __future__ import annotations

from abc import abstractmethod

from recsys.stores.base import Store


class ExclusionStore(Store):
    @abstractmethod
    def add(self, user_id: str, item_id: str) -> None:
        """Exclude the item for this user from now on."""

    @abstractmethod
    def items(self, user_id: str) -> set[str]:
        """Every item the user excluded."""
