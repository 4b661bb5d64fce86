"""The live session's blend on its own: picks near what was just viewed, dismissed items' neighbours sink."""

from __future__ import annotations

import pandas as pd

from bento_services.pipeline.contracts import RecommendedItem
from bento_services.pipeline.session import LiveSession
from recsys.models.neighbours import ItemNeighbours
from recsys.settings import StreamingSettings
from recsys.stores.activity import Activity

NOW = 10_000_000
MINUTE = 60_000


def neighbours() -> ItemNeighbours:
    """Two clusters: a1..a4 always together, b1..b4 always together."""
    rows = [(f"u{u}", f"{c}{k}") for u in range(30) for c in "ab" if u % 2 == (c == "b") for k in range(1, 5)]
    return ItemNeighbours.build(pd.DataFrame(rows, columns=["user_id", "item_id"]), neighbours=3)


def listed(*ids: str) -> list[RecommendedItem]:
    return [RecommendedItem(i, k, 1.0 - k / 10, "collaborative", "similar_users") for k, i in enumerate(ids, 1)]


def blend(log: list[Activity], items: list[RecommendedItem], excluded: frozenset[str] = frozenset(),
          deny: frozenset[str] = frozenset()) -> list[RecommendedItem]:
    live = LiveSession(neighbours(), StreamingSettings(session_slots=2, pushdown_neighbours=3))
    return live.blend(items, log, NOW, 6, lambda item: item not in deny, excluded)


def test_a_click_puts_its_neighbours_on_top_and_drops_what_the_session_consumed() -> None:
    out = blend([Activity("e1", NOW - MINUTE, "a1", "click")], listed("b1", "b2", "a1", "b3", "b4", "x"))
    assert [i.source for i in out[:2]] == ["session", "session"]
    assert {i.item_id for i in out[:2]} <= {"a2", "a3", "a4"}
    assert "a1" not in [i.item_id for i in out]
    assert [i.rank for i in out] == list(range(1, 7)) and len(out) == 6


def test_a_closed_session_changes_nothing() -> None:
    items = listed("b1", "b2", "a1")
    assert blend([Activity("e1", NOW - 31 * MINUTE, "a1", "click")], items) == items


def test_picks_respect_exclusions_and_rules() -> None:
    out = blend([Activity("e1", NOW - MINUTE, "a1", "click")], listed("b1", "b2"), excluded=frozenset({"a2"}),
                deny=frozenset({"a3"}))
    assert [i.item_id for i in out if i.source == "session"] == ["a4"]


def test_not_interested_sinks_the_dismissed_items_neighbours_and_they_are_never_picked() -> None:
    log = [Activity("e1", NOW - 2 * MINUTE, "a1", "click"), Activity("e2", NOW - MINUTE, "a2", "not_interested")]
    out = blend(log, listed("a3", "b1", "a4", "b2"))
    ids = [i.item_id for i in out]
    assert not any(i.source == "session" and i.item_id in {"a3", "a4"} for i in out)
    assert ids[-2:] == ["a3", "a4"] and ids[:2] == ["b1", "b2"]
