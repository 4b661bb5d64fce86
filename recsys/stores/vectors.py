"""User embeddings in the online store, in the design's layout: per user a `vector` (float32 bytes), the
model `version` and `updated_at`. Backends: `vectors_redis` (`services`) and `vectors_sqlite` (`local`),
chosen in `recsys.backends`; one contract test for both (tests/stores/test_user_vectors_contract.py).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from recsys.errors import InvalidInputError
from recsys.stores.base import Store


@dataclass(frozen=True)
class UserVector:
    vector: np.ndarray
    version: str
    updated_at: datetime


class UserVectorStore(Store):
    @abstractmethod
    def put(self, users: list[str], vectors: np.ndarray, version: str, updated_at: datetime) -> int:
        """Write one vector per user (rows of `vectors`); returns how many were written."""

    @abstractmethod
    def get(self, users: list[str]) -> list[UserVector | None]:
        """Each user's vector, or None when the store has none."""


def check_vectors(users: list[str], vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(users):
        raise InvalidInputError(f"need one vector per user: {len(users)} users, vectors of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise InvalidInputError("user vectors must be finite")
    return vectors
