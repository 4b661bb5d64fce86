"""Blue-green serving: the versions a process serves side by side, and which one a request gets.

A `Deployment` is one version as the request path reads it: candidate tables, retriever, post-processing rules,
live session and ranker. It is immutable; a swap builds a new `Rollout` (the stable deployment, optionally a canary
with its share of users) and replaces one reference, so a request that took its deployment at its start finishes on
it whatever is swapped in meanwhile (`RecommendationPipeline.pinned`).

Users are split by `release_bucket`, the experiments' crc32 bucket of the user id under its own salt: the same user
gets the same version in every process, and the canary's users are not the users of an experiment arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from bento_services.pipeline.assignment import bucket_of
from bento_services.pipeline.contracts import Ranker
from bento_services.pipeline.postprocess import PostProcessor
from bento_services.pipeline.retrieve import Retriever, ServingTables
from bento_services.pipeline.session import LiveSession
from recsys.release import Version
from recsys.settings import Settings

RELEASE_SALT = "release:"
#: A version's own user vectors, written beside its index (`embeddings.artifacts.USER_VECTORS`).
USER_VECTORS = "user_vectors.npz"


class VectorSource(Protocol):
    def get(self, user_id: str) -> np.ndarray | None: ...


class UserVectors:
    """A version's user vectors in memory, from its folder. A version a release loads reads these rather than the
    online store, which holds one vector per user (the stable version's, once published) and whose cache keeps a
    vector an hour: no request mixes one model's user vector with another model's item index."""

    def __init__(self, users: list[str], vectors: np.ndarray) -> None:
        self._row = {user: k for k, user in enumerate(users)}
        self._vectors = vectors

    def get(self, user_id: str) -> np.ndarray | None:
        row = self._row.get(user_id)
        return None if row is None else self._vectors[row]

    @classmethod
    def load(cls, folder: Path) -> UserVectors | None:
        """None when the folder has no user vectors (the online store is read then)."""
        path = folder / USER_VECTORS
        if not path.is_file():
            return None
        with np.load(path) as saved:
            return cls([str(u) for u in saved["users"]], np.asarray(saved["vectors"], dtype=np.float32))


@dataclass(frozen=True, eq=False)  # one loaded version: equal only to itself (its tables hold DataFrames)
class Deployment:
    tables: ServingTables
    retriever: Retriever | None
    post: PostProcessor
    live: LiveSession
    ranker: Ranker | None
    vectors: UserVectors | None = None  # None: the online store (through the embedding cache)

    @property
    def version(self) -> Version:
        return Version(self.tables.folder_name, self.ranker.version if self.ranker is not None else None)


def deployment_of(settings: Settings, tables: ServingTables, ranker: Ranker | None,
                  retriever: Retriever | None = None, vectors: UserVectors | None = None) -> Deployment:
    """The deployment of these tables (its retriever built unless given) and ranker."""
    if retriever is None and tables.tables is not None:
        retriever = Retriever(tables.tables, settings.serving.nprobe)
    live = LiveSession(tables.tables.neighbours if tables.tables is not None else None, settings.streaming)
    return Deployment(tables, retriever, PostProcessor(tables.attributes, settings.serving), live, ranker, vectors)


@dataclass(frozen=True)
class Rollout:
    stable: Deployment
    canary: Deployment | None = None
    share: int = 0  # percent of users, by release bucket, on the canary

    def pick(self, user_id: str) -> Deployment:
        if self.canary is not None and release_bucket(user_id) < self.share:
            return self.canary
        return self.stable

    def deployments(self) -> list[Deployment]:
        return [self.stable] if self.canary is None else [self.stable, self.canary]


def release_bucket(user_id: str) -> int:
    """The user's release bucket in 0..99: users below the canary's share get the canary."""
    return bucket_of(RELEASE_SALT + user_id)


def store_ranker(version: str) -> Ranker:
    """The ranker `version` from the model store (torch loads here, off the request path)."""
    from recsys.models.ranker import MODEL_NAME, load_ranker

    return load_ranker(f"{MODEL_NAME}:{version}")
