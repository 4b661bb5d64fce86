"""Which user ids the platform knows: events from users the catalog lacks are refused (404), as
recommendations for them are, so that nothing is written for an id no one registered.

The catalog is the authority; while it is unreachable events are accepted unchecked (never lost), the
way the pipeline answers unchecked. Known ids are remembered, so a user costs one catalog read.
"""

from __future__ import annotations

import logging
from typing import Protocol

from bento_services.pipeline.connections import Connection
from recsys.backends import open_catalog
from recsys.errors import UnknownUserError
from recsys.settings import Settings
from recsys.stores import CatalogStore

log = logging.getLogger(__name__)
MAX_REMEMBERED = 1_000_000


class UserDirectory(Protocol):
    def check(self, user_id: str) -> None:
        """Raise UnknownUserError for an id the catalog does not have."""
        ...

    def close(self) -> None: ...


class CatalogUsers:
    """`UserDirectory` over the catalog, one connection per thread."""

    def __init__(self, settings: Settings) -> None:
        self._catalog: Connection[CatalogStore] = Connection("catalog", lambda: open_catalog(settings))
        self._known: set[str] = set()

    def check(self, user_id: str) -> None:
        if user_id in self._known:
            return
        try:
            row = self._catalog.call(lambda catalog: catalog.get_user(user_id))
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises, the catalog cannot answer now
            log.warning("catalog unavailable, accepting an event of user %s unchecked: %r", user_id, exc)
            return
        if row is None:
            raise UnknownUserError(user_id)
        if len(self._known) < MAX_REMEMBERED:
            self._known.add(user_id)

    def close(self) -> None:
        self._catalog.close()
