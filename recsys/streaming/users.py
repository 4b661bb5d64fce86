"""The `users` consumer: a user first seen in an event gets a catalog row, so the first
`POST /interactions` of an unknown user creates them (the API accepts events of any user).

Each batch becomes one `CatalogStore.register_users` call: a bare row (created_at and last_active_at the
time of the user's newest event in the batch) for every id the catalog lacks, and last_active_at moved
forward on the rows it has; a profile (`POST /users`, an import) is never touched otherwise. The write is
idempotent, so a batch delivered twice changes nothing. A user whose row has a last_active_at has had
events, which is how serving tells a new user (cold start) from a returning one whose session has ended.
"""

from __future__ import annotations

from datetime import datetime

from recsys.stores.catalog import CatalogStore
from recsys.streaming.consumers import Event, StoreConsumer
from recsys.streaming.decode import event_time


def newest_by_user(events: list[Event]) -> dict[str, datetime]:
    """Each user id of the batch with the time of their newest event (UTC)."""
    seen: dict[str, datetime] = {}
    for payload in events:
        moment = (payload.get("_at") or event_time(payload)).to_pydatetime()
        user = payload["user_id"]
        if user not in seen or moment > seen[user]:
            seen[user] = moment
    return seen


class UserRegistrar(StoreConsumer[CatalogStore]):
    """Users seen in events into the catalog (`register_users`); the catalog is opened (and migrated) lazily."""

    name = "users"

    def handle(self, events: list[Event]) -> None:
        seen = newest_by_user(events)
        if seen:
            self.write(lambda catalog: catalog.register_users(seen))
