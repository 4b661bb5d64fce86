"""The consumer that writes interactions (and ratings) into the interaction store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from recsys.events import INTERACTION_COLUMNS, context_to_json
from recsys.stores.interactions import InteractionStore


class InteractionStoreWriter:
    """The `local` store writer: interactions, and ratings as `rate` interactions, into the interaction store.

    Not-interested and report feedback are not interactions; the service keeps its own exclusions.
    The store is opened lazily on the bus's worker thread, the only thread that uses it.
    """

    def __init__(self, open_store: Callable[[], InteractionStore]) -> None:
        self._open_store = open_store
        self._store: InteractionStore | None = None

    def on_interaction(self, payload: dict[str, Any]) -> None:
        self._write(payload, payload["action_type"], payload.get("session_id"), payload.get("context"))

    def on_feedback(self, payload: dict[str, Any]) -> None:
        if payload["feedback"] == "rating":
            self._write(payload, "rate", None, None)

    def _write(self, payload: dict[str, Any], action: str, session: str | None, context: Any) -> None:
        if self._store is None:
            self._store = self._open_store()
            self._store.migrate()
        row = {
            "event_id": payload["event_id"], "user_id": payload["user_id"], "item_id": payload["item_id"],
            "event_time": pd.Timestamp(payload["event_time"]), "action_type": action,
            "value": payload.get("value"), "session_id": session, "context": context_to_json(context),
        }
        frame = pd.DataFrame([row], columns=list(INTERACTION_COLUMNS))
        frame["value"] = frame["value"].astype("float64")
        self._store.write(frame)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
