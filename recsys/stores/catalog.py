"""The catalog store: users, items and precomputed recommendations.

One interface, one implementation per backend (SQLite for `local`, PostgreSQL for `services`),
both checked by the same contract test.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import InvalidInputError
from recsys.stores.base import Store

ITEM_COLUMNS = (
    "item_id", "title", "description", "category", "subcategory", "tags", "content_features",
    "view_count", "interaction_count", "avg_rating", "created_at", "updated_at", "is_active",
    "is_new_item",
)
USER_COLUMNS = (
    "user_id", "created_at", "last_active_at", "preferred_categories", "language", "country",
    "engagement_level", "total_interactions", "is_new_user", "onboarding_completed",
)
#: Popularity columns: written by ``item_stats``, never by a metadata upsert.
ITEM_STAT_COLUMNS = ("view_count", "interaction_count", "avg_rating")
ITEM_METADATA_COLUMNS = tuple(c for c in ITEM_COLUMNS if c not in ITEM_STAT_COLUMNS)
#: Columns an upsert may refresh on an existing row (a missing value keeps the stored one).
ITEM_UPDATE_COLUMNS = tuple(c for c in ITEM_METADATA_COLUMNS if c not in ("item_id", "created_at"))
USER_UPDATE_COLUMNS = tuple(c for c in USER_COLUMNS if c != "user_id")
#: An item_stats frame: item_id, the stat columns, and first_seen (fills a missing created_at).
ITEM_STATS_FRAME = ("item_id", *ITEM_STAT_COLUMNS, "first_seen")


class IncompleteItemError(InvalidInputError):
    """A new item was upserted without a field the catalog requires of every item (its title)."""

    def __init__(self, item_id: str, field: str) -> None:
        super().__init__(f"item {item_id!r} is new: {field} is required to create it")
        self.item_id, self.field = item_id, field


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    rank: int
    score: float
    explanation_type: str | None = None


class CatalogStore(Store):
    """Users, items and precomputed recommendations, as the design's PostgreSQL schema has them."""

    @abstractmethod
    def migrate(self) -> None:
        """Create the tables and indexes; safe to run again."""

    @abstractmethod
    def write(
        self,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        item_stats: pd.DataFrame | None = None,
    ) -> None:
        """Upsert items and users by id and set item popularity, all in one transaction.

        A missing (null) value in an upsert keeps what the row already holds, so events alone can
        refresh a user's activity without erasing the profile a users file gave. Every item row written
        gets `updated_at` = the time of the write (the store sets it; `items_changed_since` reads it).
        """

    @abstractmethod
    def item_ids(self) -> set[str]: ...

    @abstractmethod
    def get_item(self, item_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def get_user(self, user_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def upsert_item(
        self, item_id: str, *, title: str | None = None, description: str | None = None,
        category: str | None = None, subcategory: str | None = None, tags: Sequence[str] | None = None,
        content_features: Mapping[str, Any] | None = None, is_active: bool | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create or update one item's metadata in one transaction (an admin's post, one imported item).

        A None keeps the stored value (an empty tag list clears the tags); `updated_at` becomes now, and a
        new row gets `created_at` now and needs a title (IncompleteItemError otherwise, nothing written).
        Popularity columns are never touched. Returns the stored row and whether it was created.
        """

    @abstractmethod
    def items_changed_since(self, since: datetime | None, columns: Sequence[str] = ITEM_COLUMNS) -> pd.DataFrame:
        """The items whose row was written (created or updated: `updated_at`) at or after `since`, every item
        when `since` is None, oldest write first (ties by item_id); `columns` of ITEM_COLUMNS, item_id first.

        Values as `get_item` gives them (tags a list, content_features a dict, times aware UTC datetimes);
        an empty frame with the columns when nothing changed.
        """

    @abstractmethod
    def upsert_user(
        self, user_id: str, *, preferred_categories: Sequence[str] | None = None, language: str | None = None,
        country: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create or update one user's profile (onboarding answers, profile edits) in one transaction.

        A None keeps the stored value (an empty category list clears them); the row is marked
        `onboarding_completed`, and a new one gets `created_at` now. Returns the stored row and whether
        it was created.
        """

    @abstractmethod
    def register_users(self, seen: Mapping[str, datetime]) -> None:
        """Users seen in events, each with the time of their newest event: a bare row (created_at and
        last_active_at that time) for each id the catalog lacks; on an existing row last_active_at moves
        forward, never back, and nothing else changes. Idempotent: the same batch again changes nothing."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Row counts of users, items and precomputed_recommendations."""

    @abstractmethod
    def put_recommendations(
        self, user_id: str, kind: str, recommendations: list[Recommendation],
        computed_at: datetime, expires_at: datetime,
    ) -> None:
        """Replace the user's list of this kind."""

    @abstractmethod
    def get_recommendations(self, user_id: str, kind: str, now: datetime) -> list[Recommendation]:
        """The user's unexpired list of this kind, best first; empty when none or expired."""




def on_conflict(table: str, key: str, updates: tuple[str, ...]) -> str:
    """The upsert clause both SQL backends share: a null in the new row keeps the stored value."""
    if not updates:
        return f"ON CONFLICT ({key}) DO NOTHING"
    return f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(
        f"{c} = COALESCE(excluded.{c}, {table}.{c})" for c in updates
    )


def frame_rows(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Rows of a catalog frame as tuples of Python values (NaN and NaT become None, arrays lists)."""
    present = frame.reindex(columns=list(columns))
    clean = present.astype(object).where(present.notna(), None)
    rows = []
    for row in clean.itertuples(index=False, name=None):
        rows.append(tuple(v.to_pydatetime() if isinstance(v, pd.Timestamp) else v.tolist()
                          if isinstance(v, np.ndarray) else v for v in row))
    return rows


def json_plain(value: Any) -> Any:
    """`json.dumps` default for the numpy values a Parquet round trip leaves in lists and dicts."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")
