"""The feature updater: after each batch, each user's `user_realtime` row, written to the online store, so
`get_online_features`, the fast online path and the ranker all read it.

By default through the fast online writer (`recsys.features.writer`), which writes exactly the bytes of
Feast's push path (`FeatureStore.push(..., to=PushMode.ONLINE)`; tests/features/test_realtime.py compares
them) without Feast re-reading its registry on every call (~35 ms, which capped the updater near 1,500
events/s in batches of 100); `feast_push=True` takes Feast's own path.

Its state is its own activity log per user (`recent:{user_id}`, Redis or SQLite); the row is
`recsys.features.realtime.realtime_features` over that log, the definition `realtime_history` evaluates
over the lake for training. Item categories come from the lake's latest catalog snapshot, re-read every
`CATEGORIES_TTL_S` so that new items get theirs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from recsys.features.realtime import PUSH_SOURCE, SESSION_GAP_MS, realtime_features, to_arrow
from recsys.features.writer import write_rows
from recsys.stores.activity import ActivityStore
from recsys.stores.lake import Lake
from recsys.streaming.consumers import Event, activities
from recsys.streaming.decode import action_of

CATEGORIES_TTL_S = 300.0
VIEW = "user_realtime"


def item_categories(lake: Lake) -> dict[str, str]:
    items = lake.latest_snapshot("items")
    if items is None or "category" not in items:
        return {}
    return dict(zip(items["item_id"].astype(str), items["category"].fillna("").astype(str)))


class FeatureUpdater:
    name = "features"

    def __init__(self, open_log: Callable[[], ActivityStore], open_store: Callable[[], Any],
                 categories: Callable[[], Mapping[str, str]], gap_ms: int = SESSION_GAP_MS,
                 feast_push: bool = False) -> None:
        self._open_log, self._open_store, self._load_categories = open_log, open_store, categories
        self._gap_ms = gap_ms
        self.feast_push = feast_push
        self._view: Any = None
        self._log: ActivityStore | None = None
        self._store: Any = None
        self._categories: Mapping[str, str] = {}
        self._categories_at = float("-inf")

    def handle(self, events: list[Event]) -> None:
        by_user = activities([e for e in events if action_of(e) is not None])  # interactions and ratings
        if not by_user:
            return
        if time.monotonic() - self._categories_at > CATEGORIES_TTL_S:
            self._categories, self._categories_at = self._load_categories(), time.monotonic()
        if self._log is None:
            self._log = self._open_log()
        if self._store is None:
            self._store = self._open_store()
            self._view = self._store.get_feature_view(VIEW)
        try:
            logs = self._log.append(by_user)
            rows = pd.DataFrame([realtime_features(user, log, self._categories, self._gap_ms)
                                 for user, log in logs.items()])
            rows["created_timestamp"] = pd.Timestamp.now(tz="UTC")
            self.push(rows)
        except Exception:
            self.close()
            raise

    def push(self, rows: pd.DataFrame) -> None:
        if self.feast_push:
            from feast.data_source import PushMode

            self._store.push(PUSH_SOURCE, rows, to=PushMode.ONLINE)
        else:
            write_rows(self._store, self._view, to_arrow(rows))

    def close(self) -> None:
        if self._log is not None:
            log, self._log = self._log, None
            log.close()
        self._store = None
