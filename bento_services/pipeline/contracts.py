"""What the request pipeline takes and returns, shared by the HTTP layer, the batch job and the tests.

Plain dataclasses: the HTTP layer validates bodies and query strings (pydantic) and builds these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

import numpy as np


class Degradation(str, Enum):  # noqa: UP042 - str mixin keeps json/format behaviour of plain str values
    """The rung of the ladder an answer came from; `full` is no degradation.

    `default_features` is still ranked, on typed defaults (the online store did not answer).
    `stale_features`: the online store stopped being refreshed (an item view's newest row is past its TTL
    at the request time): the ranker would see defaults everywhere, inputs it never trained on; the answer
    keeps candidate order, which is no worse. Single missing or old values (an item nobody touched this
    year, a user back after a long absence) take typed defaults and are ranked, as in training.
    `candidate_scores` skips the ranker (none loaded, or it failed).
    `precomputed` is the answer when candidate generation (the ANN) failed. `popular` is the floor.
    `cold_start` is no failure: a user with nothing to personalize from yet (not in the catalog, or
    registered with no event so far, and no live session) gets the popular items of their onboarding
    categories (`popular_in_category`), then the popular ones (`popular`).
    """

    FULL = "full"
    DEFAULT_FEATURES = "default_features"
    STALE_FEATURES = "stale_features"
    CANDIDATE_SCORES = "candidate_scores"
    PRECOMPUTED = "precomputed"
    POPULAR = "popular"
    COLD_START = "cold_start"


@dataclass(frozen=True)
class RequestContext:
    device: str | None = None
    page: str | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class RecommendationRequest:
    user_id: str
    n: int = 50
    context: RequestContext = field(default_factory=RequestContext)
    at: datetime | None = None  # the request time; None is now. Batch replays and backfills set it (--as-of)
    variant: str | None = None  # a forced arm (`assignment.forced`: the playground); None assigns by bucket
    # `time.monotonic()` when the server received the request; the pipeline counts its budget from it
    # (`serving.request_budget_ms`). None: from when `recommend` is called (batch, tests).
    received_at: float | None = None


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    rank: int  # 1-based
    score: float
    source: str  # the candidate source that contributed most: collaborative, content, popularity, trending, ...
    explanation: str  # explanation type: similar_users, similar_items, popular_in_category, trending, ...


@dataclass(frozen=True)
class RecommendationResponse:
    user_id: str
    items: list[RecommendedItem]
    variant: str  # experiment id and variant, e.g. "exp_ranker_v2_A" or "control"
    model_version: str
    degradation: Degradation
    cached: bool = False  # answered from the precomputed layer
    stage_ms: dict[str, float] = field(default_factory=dict)
    request_id: str = ""  # clients send it back with their events about these items (attribution)
    # For the serving log only (not in the HTTP body): the user's bucket, the candidate artifact, and the
    # ranker's input for the requests whose features are sampled (`monitoring.feature_sample_rate`).
    bucket: int = -1
    candidates_version: str = ""
    features: dict[str, list[Any]] | None = None
    at: datetime | None = None  # the request's time when it was not now (a replay: `RecommendationRequest.at`)

#: What the serving log keeps and the HTTP body leaves out.
LOG_ONLY = frozenset({"stage_ms", "bucket", "candidates_version", "features", "at"})


class Ranker(Protocol):
    """Scores one user's candidates; higher is better. `version` is the model version.

    `features` has the layout of `FastOnlineFeatures.get(...)[0]` (one list per column, one entry per
    candidate, `view__feature` names of the `ranker_v1` service, i.e. `get_online_features(...).to_dict()`
    with full feature names); training reads the same columns from `get_historical_features`, so one
    encoder serves both. `candidate_scores` are the fusion scores, `embedding_scores` the user-item
    inner products of the two-tower model (0 where either side has no vector).
    """

    version: str

    def score(self, features: dict[str, list[object]], candidate_scores: np.ndarray,
              embedding_scores: np.ndarray) -> np.ndarray: ...


class RecommendationService(Protocol):
    """What the HTTP layer calls; `bento_services.pipeline.pipeline.build_pipeline(settings)` returns one."""

    def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        """Always answers (degrading rung by rung); a user the catalog lacks gets the `cold_start` rung."""
        ...

    def not_interested(self, user_id: str, item_id: str) -> None:
        """Exclude the item from this user's answers from the next request on (survives restarts)."""
        ...

    def readiness(self) -> dict[str, bool]:
        """Each dependency (models, index, online store, catalog, ...) and whether it is usable now."""
        ...

    def close(self) -> None: ...
