"""A/B assignment: a stable bucket of the user id picks the experiment arm.

`zlib.crc32` rather than Python's `hash()`, which is salted per process: the same user must land in
the same arm in every worker, after every restart, and in the batch job.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from recsys.errors import InvalidInputError
from recsys.settings import ExperimentVariant

BUCKETS = 100
CONTROL = "control"
#: The prefix of a forced arm's name: a debugging override (the playground), never experiment traffic.
FORCED = "forced:"


@dataclass(frozen=True)
class Assignment:
    """The arm a user is in; `variant` is None for control."""

    name: str
    bucket: int
    variant: ExperimentVariant | None = None

    @property
    def changes_ranking(self) -> bool:
        """Whether this arm ranks differently from what the precompute job wrote (control's ranking)."""
        return self.variant is not None and (
            self.variant.ranker_version is not None or self.variant.diversity_boost != 0.0 or self.variant.shuffle
        )

    @property
    def shuffle(self) -> bool:
        """A holdout arm: its lists are served in random order."""
        return self.variant is not None and self.variant.shuffle

    @property
    def diversity_boost(self) -> float:
        return self.variant.diversity_boost if self.variant is not None else 0.0

    @property
    def ranker_version(self) -> str | None:
        return self.variant.ranker_version if self.variant is not None else None


def bucket_of(user_id: str) -> int:
    """The user's bucket in 0..99, the same in every process."""
    return zlib.crc32(user_id.encode("utf-8")) % BUCKETS


def assign(user_id: str, experiments: Sequence[ExperimentVariant]) -> Assignment:
    """The first variant whose half-open bucket range holds the user's bucket; control otherwise."""
    bucket = bucket_of(user_id)
    for variant in experiments:
        start, end = variant.buckets
        if start <= bucket < end:
            return Assignment(variant.name, bucket, variant)
    return Assignment(CONTROL, bucket)


def forced(user_id: str, name: str, experiments: Sequence[ExperimentVariant]) -> Assignment:
    """The arm `name` (a variant's name or `control`) whatever the user's bucket: the playground's override.

    It is named `forced:<name>` in the answer and the serving log, so that experiment reports, which read the
    arms they assigned, never count it as that arm's traffic. An unknown name is a 400 that lists the known ones.
    """
    bucket = bucket_of(user_id)
    if name == CONTROL:
        return Assignment(FORCED + CONTROL, bucket)
    for variant in experiments:
        if variant.name == name:
            return Assignment(FORCED + name, bucket, variant)
    known = ", ".join([CONTROL, *(v.name for v in experiments)])
    raise InvalidInputError(f"unknown variant {name!r}: this server's arms are {known} (serving.experiments)")
