"""What an import reads: items, users and interaction chunks in the canonical shapes.

A source validates as it reads, so the importer can read it once to check everything and once
more to write it, holding one chunk at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from ingestion.validation import DataFile

ITEM_METADATA = ("item_id", "title", "description", "category", "subcategory", "tags", "content_features", "created_at")
USER_PROFILE = ("user_id", "created_at", "preferred_categories", "language", "country")


@dataclass(frozen=True)
class Chunk:
    """Canonical interactions read from ``file``; the index holds the file's row numbers."""

    file: DataFile
    frame: pd.DataFrame
    item_column: str = "item_id"


class Source(ABC):
    """A dataset to import. Chunks carry their file's row numbers in the index."""

    name: str

    @abstractmethod
    def items(self) -> pd.DataFrame | None:
        """Item metadata (ITEM_METADATA columns), or None when the source has no items."""

    @abstractmethod
    def users(self) -> pd.DataFrame | None:
        """User profiles (USER_PROFILE columns), or None when users come from the events alone."""

    @abstractmethod
    def interaction_chunks(self) -> Iterator[Chunk]:
        """Checked chunks of canonical interactions; each call reads from the start."""

    def size_hint(self) -> int | None:
        """Roughly how many interactions, for progress bars."""
        return None
