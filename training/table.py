"""The models of the evaluation table, per seed: the peers at their tuned values, our merged candidates, two
of its sources alone, and the final lists (candidates re-ranked by the ranker)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from feast import FeatureStore

from embeddings.train import TrainConfig
from training.candidate_eval import MergedCandidates, SourceAlone
from training.peers import default_peers
from training.ranker_eval import RankedCandidates, RankerEvalConfig
from training.recommender import Recommender
from training.tuning import ours_from


@dataclass
class TableModels:
    """`models(seed)` for `training.evaluation.run_evaluation`; remembers each seed's ranked lists."""

    items: pd.DataFrame
    config: TrainConfig
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    store: FeatureStore | None = None  # with a feature store, the final lists (ranker) are in the table
    progress: Callable[[str], None] = print
    ranked: dict[int, RankedCandidates] = field(default_factory=dict)

    def __call__(self, seed: int) -> list[Recommender]:
        quotas, weights = ours_from(self.params)
        merged = MergedCandidates(self.items, replace(self.config, seed=self.config.seed + seed), quotas,
                                  weights=weights)
        models: list[Recommender] = [*default_peers(seed, self.params), merged,
                                     SourceAlone(merged, "collaborative", "two-tower ANN"),
                                     SourceAlone(merged, "similar_items", "similar items")]
        if self.store is not None:
            ranker = RankerEvalConfig(candidate_epochs=self.config.epochs)
            ranker = replace(ranker, train=replace(ranker.train, seed=ranker.train.seed + seed))
            # After `merged`: it re-ranks the harness's own fitted candidates, trained on the training part only.
            self.ranked[seed] = RankedCandidates(self.items, self.store, ranker, self.progress, reuse=merged)
            models.append(self.ranked[seed])
        return models
