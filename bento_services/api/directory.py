"""The users the API registers: `POST /users` upserts a profile (onboarding answers, profile edits) into the
catalog, synchronously, so the very next answer sees it.

Nothing else is asked of the directory: events of any user are accepted (the first `POST /interactions`
of a new user creates their catalog row through the `users` consumer, `recsys.streaming.users`), and a
user the catalog lacks gets the cold-start answer. Nothing is cached here either: the pipeline reads the
user's row on every request, so no remembered state can hide a registration or an update.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from bento_services.pipeline.connections import Connection
from recsys.backends import open_catalog
from recsys.errors import StoreUnavailableError
from recsys.settings import Settings
from recsys.stores import CatalogStore

log = logging.getLogger(__name__)


class CatalogUnavailableError(StoreUnavailableError):
    """The catalog did not take the profile; nothing was written, the client should retry later (503)."""

    def __init__(self, message: str, retry_after_seconds: int = 5) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class UserDirectory(Protocol):
    def upsert(self, user_id: str, preferred_categories: Sequence[str] | None, language: str | None,
               country: str | None) -> tuple[dict[str, Any], bool]:
        """Create or update the profile (None keeps the stored value); the stored row and whether it is new.

        Raises CatalogUnavailableError when the write did not happen.
        """
        ...

    def close(self) -> None: ...


class CatalogUsers:
    """`UserDirectory` over the catalog, one connection per thread."""

    def __init__(self, settings: Settings) -> None:
        self._catalog: Connection[CatalogStore] = Connection("catalog", lambda: open_catalog(settings))

    def upsert(self, user_id: str, preferred_categories: Sequence[str] | None, language: str | None,
               country: str | None) -> tuple[dict[str, Any], bool]:
        try:
            return self._catalog.call(lambda catalog: catalog.upsert_user(
                user_id, preferred_categories=preferred_categories, language=language, country=country))
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises, the profile was not written
            log.warning("catalog did not take the profile of user %s: %r", user_id, exc)
            retry = max(1, round(self._catalog.retry_seconds))
            raise CatalogUnavailableError(f"the catalog is unavailable; the profile of user {user_id!r} was not "
                                          f"written: retry in {retry} s", retry_after_seconds=retry) from exc

    def close(self) -> None:
        self._catalog.close()
