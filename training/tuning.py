"""The hyper-parameter search behind `recsys evaluate --tune`: every tunable model, ours and the peers', gets
the same budget of configurations, judged on the same validation split carved from the training part (the
test is never looked at), by one objective.

* ItemKNN: neighbours. EASE: the L2 penalty. ALS: factors and regularisation.
* Ours (merged candidates): source quotas and fusion weights, over one fitted two-tower model (the search
  changes how the sources are merged, not the model: a configuration costs lists, not training).
* Popularity has nothing to tune; the ranker stops early on its own validation lists.

The objective is the mean of the table's four main columns, Recall@100/500/1000 and NDCG@10: candidate
generation must reach the right items at every list length, and put the best first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from embeddings.train import TrainConfig
from recsys.models.candidates import FusionWeights, Quotas
from training.candidate_eval import MergedCandidates, Variant
from training.evaluation import evaluate
from training.peers import ALS, EASE, ItemKNN
from training.recommender import Recommender

OBJECTIVE = ("recall@100", "recall@500", "recall@1000", "ndcg@10")
BUDGET = 6  # configurations per model
OURS = "candidates (merged)"

#: Each model's search space, in the order tried (the first entry is the library default or ours today).
PEER_SPACE: dict[str, tuple[type, list[dict[str, Any]]]] = {
    "itemknn": (ItemKNN, [{"neighbours": n} for n in (100, 50, 200, 400, 1000, 2000)]),
    "ease": (EASE, [{"l2": v} for v in (500.0, 50.0, 100.0, 200.0, 300.0, 1000.0)]),
    "als": (ALS, [{"factors": f, "regularization": r}
                  for f, r in ((64, 0.05), (64, 0.01), (128, 0.05), (128, 0.2), (256, 0.05), (256, 0.2))]),
}
_DEFAULT_Q, _DEFAULT_W = asdict(Quotas()), asdict(FusionWeights())
OURS_SPACE: list[dict[str, dict[str, float]]] = [
    {"quotas": _DEFAULT_Q, "weights": _DEFAULT_W},
    {"quotas": {**_DEFAULT_Q, "collaborative": 500, "similar_items": 300, "content": 150}, "weights": _DEFAULT_W},
    {"quotas": _DEFAULT_Q, "weights": {**_DEFAULT_W, "similar_items": 1.0}},
    {"quotas": _DEFAULT_Q, "weights": {**_DEFAULT_W, "similar_items": 2.5}},
    {"quotas": {**_DEFAULT_Q, "collaborative": 250, "similar_items": 600}, "weights": _DEFAULT_W},
    {"quotas": _DEFAULT_Q, "weights": {**_DEFAULT_W, "content": 0.6, "popularity": 0.3, "trending": 0.3}},
]


def objective(row: Mapping[str, Any]) -> float:
    return float(sum(float(row[m]) for m in OBJECTIVE) / len(OBJECTIVE))


def tune(train: pd.DataFrame, validation: pd.DataFrame, items: pd.DataFrame, config: TrainConfig,
         budget: int = BUDGET, users_sample: int | None = None,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Try ``budget`` configurations of every tunable model on (train, validation); the best of each by
    `objective`, and every trial. ``config``: the two-tower training of our candidates (not searched)."""
    trials: list[dict[str, Any]] = []
    chosen: dict[str, dict[str, Any]] = {}
    for name, (cls, space) in PEER_SPACE.items():
        for params in space[:budget]:
            trials.append(_trial(name, params, cls(**params), train, validation, users_sample, log))
        chosen[name] = _best(trials, name)
    parent = MergedCandidates(items, config)
    for number, params in enumerate(OURS_SPACE[:budget]):
        variant = Variant(parent, f"{OURS} #{number}", Quotas(**params["quotas"]),  # type: ignore[arg-type]
                          FusionWeights(**params["weights"]))
        trials.append(_trial(OURS, params, variant, train, validation, users_sample, log))
    chosen[OURS] = _best(trials, OURS)
    return {"objective": f"mean of {', '.join(OBJECTIVE)} on the validation split", "budget": budget,
            "two_tower": asdict(config) | {"until": None}, "tuned_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "chosen": chosen, "trials": trials}


def _trial(name: str, params: dict[str, Any], model: Recommender, train: pd.DataFrame, validation: pd.DataFrame,
           users_sample: int | None, log: Callable[[str], None]) -> dict[str, Any]:
    row = evaluate([model], train, validation, users_sample=users_sample, log=lambda _: None).iloc[0].to_dict()
    score = objective(row)
    log(f"tune {name} {json.dumps(params, sort_keys=True)}: objective {score:.4f} "
        f"(R@100 {row['recall@100']:.4f}, R@500 {row['recall@500']:.4f}, NDCG@10 {row['ndcg@10']:.4f})")
    return {"model": name, "params": params, "objective": score, **{m: float(row[m]) for m in OBJECTIVE}}


def _best(trials: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    mine = [t for t in trials if t["model"] == name]
    return dict(max(mine, key=lambda t: t["objective"])["params"])


def save(tuning: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tuning, indent=2) + "\n")


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The chosen values of a saved search (by model name); empty when there is no file."""
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text())["chosen"])


def ours_from(chosen: Mapping[str, Mapping[str, Any]]) -> tuple[Quotas, FusionWeights]:
    """Our quotas and fusion weights as chosen (the defaults when the search has not run)."""
    params = chosen.get(OURS, {})
    return Quotas(**params.get("quotas", {})), FusionWeights(**params.get("weights", {}))
