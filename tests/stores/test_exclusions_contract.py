"""One contract for every ExclusionStore: SQLite (`local`) and Redis (`services`)."""

from __future__ import annotations

import uuid

from recsys.backends import open_exclusions
from recsys.settings import Settings


def test_exclusions_accumulate_per_user_and_survive_a_reopen(settings: Settings) -> None:
    user, other = f"excl-{uuid.uuid4().hex[:8]}", f"excl-{uuid.uuid4().hex[:8]}"
    with open_exclusions(settings) as store:
        assert store.items(user) == set()
        store.add(user, "i1")
        store.add(user, "i2")
        store.add(user, "i1")  # twice is once
        store.add(other, "i3")
    with open_exclusions(settings) as reopened:  # kept across restarts
        assert reopened.items(user) == {"i1", "i2"}
        assert reopened.items(other) == {"i3"}
