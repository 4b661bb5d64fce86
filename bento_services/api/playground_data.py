"""What the web playground shows beside an answer: who the user is and what they did lately, what the items are,
and the ranker's input for one item, read where serving reads them.

- a user's catalog row, their arm, and their recent events: the interaction store (what the store writer has
  written) merged with the live session log (what the session aggregator has seen, seconds old), by event id;
- item titles and genres from the catalog (ml-latest-small's genres are the items' tags), kept a minute;
- the feature values of the ranker's service for a (user, item) pair with their status (present, missing,
  stale) as the online store gives them to the pipeline's assembler (user rows through its layer-3 cache);
- a random user with events in the lake, for the "random user" button.

Reads go through per-thread connections (`Connection`) opened on first use; none of this is on the request
path of `GET /recommendations`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from bento_services.pipeline.assignment import assign
from bento_services.pipeline.caches import TTLCache
from bento_services.pipeline.connections import Connection
from bento_services.pipeline.contracts import RecommendationService
from recsys.backends import open_activity, open_catalog, open_interactions, open_lake
from recsys.errors import NotFoundError, StoreUnavailableError
from recsys.settings import Settings
from recsys.stores import CatalogStore, InteractionStore
from recsys.stores.activity import Activity, ActivityStore

log = logging.getLogger(__name__)
T = TypeVar("T")
HISTORY = 20
ITEM_SECONDS = 60.0
USERS_SECONDS = 300.0


class FeaturesUnavailableError(StoreUnavailableError):
    """The server ranks without features (no ranker, or no applied feature repository): nothing to show."""


class PlaygroundData:
    """The playground's reads over the profile's stores and the service's feature assembler."""

    def __init__(self, settings: Settings, service: RecommendationService) -> None:
        self.settings, self.service = settings, service
        self.catalog: Connection[CatalogStore] = Connection("catalog", lambda: open_catalog(settings))
        self.interactions: Connection[InteractionStore] = Connection(
            "interaction store", lambda: open_interactions(settings))
        self.sessions: Connection[ActivityStore] = Connection("session store",
                                                              lambda: open_activity(settings, "session"))
        self._items: TTLCache[str, dict[str, Any]] = TTLCache(ITEM_SECONDS, max_entries=20_000)
        self._users: tuple[float, list[str]] | None = None
        self._users_lock = threading.Lock()

    # -- a user -------------------------------------------------------------------------------------------------
    def user(self, user_id: str) -> dict[str, Any]:
        """The catalog row's profile, the arm the user is assigned, and the newest HISTORY events with their items;
        `unavailable` names the stores that did not answer (their part is left out)."""
        unavailable: list[str] = []
        row = self._read(self.catalog, lambda s: s.get_user(user_id), None, unavailable)
        stored = self._read(self.interactions, lambda s: s.user_events(user_id, limit=HISTORY), None, unavailable)
        session: list[Activity] = self._read(self.sessions, lambda s: s.recent(user_id), [], unavailable)
        events: dict[str, dict[str, Any]] = {}
        if stored is not None:
            for event in stored.itertuples(index=False):
                events[str(event.event_id)] = {"item_id": str(event.item_id), "action": str(event.action_type),
                                               "at": _iso(event.event_time), "stored": True, "session": False}
        for entry in session:
            seen = events.setdefault(entry.event_id, {
                "item_id": entry.item_id, "action": entry.action, "stored": False,
                "at": _iso(datetime.fromtimestamp(entry.at_ms / 1000, UTC))})
            seen["session"] = True
        history = sorted(events.values(), key=lambda e: e["at"], reverse=True)[:HISTORY]
        titles = self.items([e["item_id"] for e in history])
        arm = assign(user_id, self.settings.serving.experiments)
        return {
            "user_id": user_id, "known": row is not None, "bucket": arm.bucket, "assigned_variant": arm.name,
            "profile": _profile(row), "history": [{**e, **titles[e["item_id"]]} for e in history],
            "unavailable": unavailable,
        }

    # -- items ----------------------------------------------------------------------------------------------------
    def items(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Title, genres and category per id; an id the catalog lacks (or cannot give now) has a null title."""
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for item_id in dict.fromkeys(item_ids):
            hit, cached = self._items.get(item_id)
            if hit and cached is not None:
                found[item_id] = cached
            else:
                missing.append(item_id)
        if missing:
            try:
                rows = self.catalog.call(lambda s: {i: s.get_item(i) for i in missing})
            except Exception as exc:  # noqa: BLE001 - titles are a nicety: show the ids alone
                log.warning("playground: catalog did not give %d items: %r", len(missing), exc)
                return {**found, **{i: _item(None) for i in missing}}
            for item_id, row in rows.items():
                found[item_id] = _item(row)
                self._items.put(item_id, found[item_id])
        return found

    # -- the ranker's input -----------------------------------------------------------------------------------------
    def features(self, user_id: str, item_id: str) -> dict[str, Any]:
        """Each feature of the ranker's service for this pair: view, value, status and typed default."""
        assembler = getattr(self.service, "assembler", None)
        if assembler is None:
            raise FeaturesUnavailableError("this server ranks without features (no ranker loaded, or no applied "
                                           "feature repository): there are no feature values to show")
        values, status = assembler.online.get(user_id, [item_id], {"request_time": datetime.now(UTC), "device": ""})
        rows = [{"feature": spec.name, "view": spec.view, "value": _plain(values[spec.ref][0]),
                 "status": status[spec.ref][0], "default": _plain(spec.default)} for spec in assembler.layout.specs]
        return {"user_id": user_id, "item_id": item_id, "service": assembler.layout.service.name, "features": rows}

    # -- someone to look at --------------------------------------------------------------------------------------
    def random_user(self) -> str:
        """A user with events in the lake (the list is read again every USERS_SECONDS)."""
        with self._users_lock:
            if self._users is None or time.monotonic() - self._users[0] > USERS_SECONDS:
                table = open_lake(self.settings).interactions(columns=["user_id"])
                users = sorted({str(u) for u in table.column("user_id").unique().to_pylist()})
                self._users = (time.monotonic(), users)
            users = self._users[1]
        if not users:
            raise NotFoundError("the lake holds no event yet: type a user id instead")
        return random.choice(users)

    def close(self) -> None:
        for connection in (self.catalog, self.interactions, self.sessions):
            connection.close()

    @staticmethod
    def _read(connection: Connection[Any], call: Callable[[Any], T], default: T, unavailable: list[str]) -> T:
        try:
            return connection.call(call)
        except Exception as exc:  # noqa: BLE001 - one store down leaves its part out, named in `unavailable`
            log.warning("playground: %s unavailable: %r", connection.name, exc)
            unavailable.append(connection.name)
            return default


def _item(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"title": None, "genres": [], "category": None}
    tags = [str(t) for t in (row.get("tags") or [])]
    category = row.get("category")
    return {"title": row.get("title"), "genres": tags or ([str(category)] if category else []),
            "category": category}


def _profile(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    keep = ("preferred_categories", "language", "country", "total_interactions", "last_active_at", "created_at")
    return {name: _plain(row.get(name)) for name in keep}


def _iso(moment: Any) -> str:
    stamp = moment.to_pydatetime() if hasattr(moment, "to_pydatetime") else moment
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return str(stamp.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))


def _plain(value: Any) -> Any:
    """A JSON-able value: numpy scalars and arrays as numbers and lists, times as ISO text, NaN as null."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bytes):
        return value.hex()
    return value
