"""The consumers of `interaction-events`. Each takes a batch of validated events (`decode.validate`) and
returns only once its effect is durable, so the runner may commit the batch's offsets after it; each is
idempotent by event_id, so a batch delivered twice (a crash before the commit, a rebalance) writes once.

| name | effect |
|---|---|
| `store-writer` | `interactions` and `item_interactions` (Cassandra / SQLite), concurrent writes |
| `lake-writer` | the Parquet lake, per event day, merged by event_id, files replaced atomically |
| `sessions` | the user's activity log `session:{user_id}`, read by serving for the live session |
| `features` | the `user_realtime` features, pushed to the online store (`recsys.features.realtime`) |

Stores are opened lazily, on the thread that runs the consumer (the bus worker in `local`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from recsys.stores.activity import Activity, ActivityStore
from recsys.stores.base import Store
from recsys.stores.interactions import InteractionStore
from recsys.stores.lake import Lake
from recsys.streaming.decode import action_of, event_time, interaction_rows, millis

Event = dict[str, Any]
S = TypeVar("S", bound=Store)


class Consumer(Protocol):
    name: str

    def handle(self, events: list[Event]) -> None:
        """Apply a batch; returns once the effect is durable; raises when it is not (the batch is retried)."""
        ...

    def close(self) -> None: ...


class StoreConsumer(Generic[S]):
    """A consumer writing to one store, opened on first use (and migrated, for stores that have a schema);
    a failed write closes it, so the retry reconnects (a driver session may not survive a server restart)."""

    def __init__(self, open_store: Callable[[], S]) -> None:
        self._open_store = open_store
        self._store: S | None = None

    def write(self, operation: Callable[[S], object]) -> None:
        if self._store is None:
            store = self._open_store()
            try:
                migrate = getattr(store, "migrate", None)
                if migrate is not None:
                    migrate()
            except Exception:
                store.close()
                raise
            self._store = store
        try:
            operation(self._store)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()


class StoreWriter(StoreConsumer[InteractionStore]):
    """Interactions (and ratings as `rate`) into the interaction store."""

    name = "store-writer"

    def handle(self, events: list[Event]) -> None:
        rows = interaction_rows(events)
        if not rows.empty:
            self.write(lambda store: store.write(rows))


class LakeWriter:
    """Interactions into the lake in the import's layout; `write_interactions` replaces each day file atomically."""

    name = "lake-writer"

    def __init__(self, lake: Lake) -> None:
        self._lake = lake

    def handle(self, events: list[Event]) -> None:
        rows = interaction_rows(events)
        if not rows.empty:
            self._lake.write_interactions(rows)

    def close(self) -> None:
        pass


def activities(events: list[Event]) -> dict[str, list[Activity]]:
    """Each user's events as activity entries; not-interested and report feedback keep their kind as action."""
    by_user: dict[str, list[Activity]] = defaultdict(list)
    for payload in events:
        action = action_of(payload) or str(payload["feedback"])
        moment = payload.get("_at") or event_time(payload)
        by_user[payload["user_id"]].append(Activity(payload["event_id"], millis(moment), payload["item_id"], action))
    return by_user


class SessionAggregator(StoreConsumer[ActivityStore]):
    """The user's recent activity under `session:{user_id}`; serving cuts the live session out of it."""

    name = "sessions"

    def handle(self, events: list[Event]) -> None:
        by_user = activities(events)
        if by_user:
            self.write(lambda store: store.append(by_user))
