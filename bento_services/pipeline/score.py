"""Stage three: scoring candidates with the ranker, or by their fusion scores when there is none."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bento_services.pipeline.contracts import Ranker
from bento_services.pipeline.features import Features
from recsys.models.candidates import Candidate


def candidate_scores(candidates: Sequence[Candidate]) -> np.ndarray:
    return np.fromiter((c.score for c in candidates), dtype=np.float64, count=len(candidates))


def rank_scores(ranker: Ranker, features: Features, fused: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    """The ranker's scores, checked: one finite number per candidate, else the stage fails."""
    scores = np.asarray(ranker.score(features, fused, embedding), dtype=np.float64).reshape(-1)
    if scores.shape != fused.shape:
        raise ValueError(f"ranker {ranker.version} returned {scores.shape[0]} scores for {fused.shape[0]} candidates")
    if not np.isfinite(scores).all():
        raise ValueError(f"ranker {ranker.version} returned non-finite scores")
    return scores


def below_ranked(ranked: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Ranker scores of the head, then the unranked tail below all of them, still in fusion order."""
    if len(tail) == 0:
        return ranked
    floor = float(ranked.min()) if len(ranked) else 0.0
    return np.concatenate([ranked, floor - 1.0 - (float(tail.max()) - tail)])
