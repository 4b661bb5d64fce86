"""The live session in an answer: items near what the user just viewed or clicked rise to the top, near
neighbours of what they just marked "not interested" sink, whatever path the rest of the answer took.

The session aggregator (`recsys.streaming.consumers.SessionAggregator`) keeps the user's last day of events
under `session:{user_id}`; the session still open is the run of events with no gap over
`streaming.session_gap_minutes` that reaches now. Its most recent positive items (`session_seeds`) seed
the item-to-item neighbours; the best `session_slots` allowed ones that the user has not consumed take
the top ranks with source and explanation `session`, and the rest of the list follows in its own order,
without the items the session consumed. The `pushdown_neighbours` nearest items of each item the session
marked "not interested" are never picked and move to the bottom of the list. A live session outranks the
precomputed list: the cached list is blended the same way, so a click shows in the very next answer,
cached or not.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from bento_services.pipeline.contracts import RecommendedItem
from recsys.models.neighbours import ItemNeighbours
from recsys.settings import StreamingSettings
from recsys.stores.activity import NEGATIVE_ACTIONS, Activity, current_session

SESSION = "session"


class LiveSession:
    def __init__(self, neighbours: ItemNeighbours | None, streaming: StreamingSettings) -> None:
        self.neighbours = neighbours
        self.gap_ms = int(streaming.session_gap_minutes * 60_000)
        self.slots = streaming.session_slots
        self.seeds = streaming.session_seeds
        self.pushdown = streaming.pushdown_neighbours

    def consumed(self, log: Sequence[Activity], now_ms: int) -> set[str]:
        """Every item the open session touched (viewed, clicked, dismissed...): not recommended again now."""
        return {a.item_id for a in current_session(log, now_ms, self.gap_ms)}

    def blend(self, items: list[RecommendedItem], log: Sequence[Activity], now_ms: int, n: int,
              allowed: Callable[[str], bool], excluded: Collection[str]) -> list[RecommendedItem]:
        """`items` with the session's picks on top and dismissed items' neighbours at the bottom.

        `allowed` is post-processing's rule check (inactive, deny list); picks also skip what the session
        touched and `excluded` (history, not interested).
        """
        session = current_session(log, now_ms, self.gap_ms)
        if not session or self.neighbours is None:
            return items
        touched = {a.item_id for a in session}
        positive = [a.item_id for a in session if a.action not in NEGATIVE_ACTIONS]
        seeds = list(dict.fromkeys(reversed(positive)))[:self.seeds][::-1]  # distinct, newest last
        rest = [i for i in items if i.item_id not in touched]
        dismissed = [a.item_id for a in session if a.action == "not_interested"]
        sunk = self._near(dismissed)
        picks: list[str] = []
        if seeds and self.slots:
            skip = set(touched) | set(excluded) | sunk
            for item, _ in self.neighbours.similar(seeds, self.slots * 4, skip, recency=0.8):
                if allowed(item):
                    picks.append(item)
                if len(picks) == self.slots:
                    break
        taken = set(picks)
        kept = [i for i in rest if i.item_id not in taken]
        kept = [i for i in kept if i.item_id not in sunk] + [i for i in kept if i.item_id in sunk]
        top = max((i.score for i in items), default=1.0)
        head = [RecommendedItem(item, 0, top, SESSION, SESSION) for item in picks]
        return [replace(i, rank=rank) for rank, i in enumerate((head + kept)[:n], start=1)]

    def _near(self, dismissed: list[str]) -> set[str]:
        if not dismissed or self.neighbours is None or not self.pushdown:
            return set()
        near: set[str] = set()
        for item in dismissed:
            near.update(i for i, _ in self.neighbours.similar([item], self.pushdown, {item}))
        return near
