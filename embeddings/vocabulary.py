"""Index spaces of the two-tower model: users, items, categories, tags and title words.

Index 0 of every space is "unknown", so a new user or item (or an unseen tag) still maps somewhere
and the towers fall back on what they know: an item's content, a user's history.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

_WORD = re.compile(r"[a-z0-9]+")
MAX_TAGS, MAX_WORDS = 8, 12


@dataclass(frozen=True)
class Vocabulary:
    users: dict[str, int]
    items: dict[str, int]
    categories: dict[str, int]
    tags: dict[str, int]
    words: dict[str, int]

    @classmethod
    def build(cls, users: pd.Series, items: pd.DataFrame, max_words: int = 20_000) -> Vocabulary:
        """From the training users and the catalog (item_id, title, category, tags)."""
        words = Counter(w for title in items["title"].fillna("") for w in sorted(set(tokens(title))))
        return cls(
            users=_index(sorted(set(users))),
            items=_index(sorted(items["item_id"])),
            categories=_index(sorted(set(items["category"].dropna()))),
            tags=_index(sorted({t for tags in items["tags"] for t in _list(tags)})),
            words=_index([w for w, _ in words.most_common(max_words)]),
        )

    def item_content(self, items: pd.DataFrame) -> dict[str, np.ndarray]:
        """Padded index arrays of each item's category, tags and title words (0 = none/unknown)."""
        return {
            "item": np.array([self.items.get(i, 0) for i in items["item_id"]], dtype=np.int64),
            "category": np.array([self.categories.get(c, 0) for c in items["category"]], dtype=np.int64),
            "tags": _padded([[self.tags.get(t, 0) for t in _list(tags)] for tags in items["tags"]], MAX_TAGS),
            "words": _padded([[self.words.get(w, 0) for w in tokens(t)] for t in items["title"].fillna("")],
                             MAX_WORDS),
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(**json.loads(path.read_text()))


def tokens(title: str) -> list[str]:
    return _WORD.findall(title.lower())


def _index(values: list[str]) -> dict[str, int]:
    return {value: position + 1 for position, value in enumerate(values)}


def _list(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in value]  # type: ignore[attr-defined]


def _padded(rows: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        row = row[:width]
        out[r, : len(row)] = row
    return out
