"""What one answer carries besides its items: each kept candidate's main source (worked out lazily), the
request's trace for the serving log, and a holdout arm's shuffled order."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bento_services.pipeline.contracts import RecommendedItem
from bento_services.pipeline.postprocess import main_source
from recsys.models.candidates import Candidate
from recsys.serving_log import sampled


class MainSources(Sequence[str]):
    """Each candidate's main source, worked out only for the few items post-processing keeps."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates

    def __len__(self) -> int:
        return len(self.candidates)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [main_source(c.sources) for c in self.candidates[k]]
        return main_source(self.candidates[k].sources)


class Trace:
    """What one request leaves for the serving log: its id and, when sampled, the ranker's input."""

    __slots__ = ("features", "request_id", "sampled")

    def __init__(self, request_id: str, sample_rate: float) -> None:
        self.request_id = request_id
        self.sampled = sampled(request_id, sample_rate)
        self.features: dict[str, list[Any]] | None = None


def shuffled(items: list[RecommendedItem], seed: str) -> list[RecommendedItem]:
    """A holdout arm's answer: the same items in a random order (seeded by the request), ranks renumbered."""
    order = np.random.default_rng(zlib.crc32(seed.encode())).permutation(len(items))
    return [replace(items[k], rank=rank) for rank, k in enumerate(order, start=1)]
