"""Training the Wide & Deep ranker, and its round trip through the BentoML model store.

`train_ranker` fits the encoder on the training lists, trains with binary cross-entropy, stops early
on the validation lists' loss (keeping the best epoch) and records a curve per epoch. `save_ranker`
writes one model to the store with everything needed to rebuild it, and the version, feature service,
data window and metrics in its labels / metadata; `load_ranker` returns a `Ranker` for serving.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from recsys.models.ranker import (
    CHECKPOINT,
    MODEL_NAME,
    Column,
    Encoded,
    Ensemble,
    FeatureEncoder,
    WideDeep,
    WideDeepConfig,
    WideDeepRanker,
    _rows,
    to_checkpoint,
)
from recsys.private.bentoml import model_store


@dataclass(frozen=True)
class RankerTrainConfig:
    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 3
    validation_fraction: float = 0.15
    seed: int = 7
    threads: int = 2
    members: int = 5  # networks from different seeds, averaged
    loss: str = "softmax"  # "softmax" (listwise, what NDCG rewards) or "bce" (pointwise)


@dataclass
class TrainedRanker:
    ranker: WideDeepRanker
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: train/val loss, val AUC
    best_epoch: int = 0
    # A sample of the rows it was trained on (feature columns and their statuses): saved beside the model as
    # REFERENCE, the reference of `recsys monitor drift` for what the ranker is served.
    reference: pd.DataFrame | None = None


#: The training rows' sample in a saved ranker's folder (`reference_sample`).
REFERENCE = "reference_features.parquet"
REFERENCE_ROWS = 20_000


def reference_sample(examples: pd.DataFrame, rows: int = REFERENCE_ROWS, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of the training rows, without the label and list columns drift does not compare."""
    sample = examples.sample(min(rows, len(examples)), random_state=seed) if len(examples) > rows else examples
    return sample.drop(columns=[c for c in ("label", "event_timestamp") if c in sample.columns]).reset_index(drop=True)


def split_lists(examples: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whole lists (users) go to validation, so it measures ranking for users the model did not fit."""
    lists = np.sort(examples["list_id"].unique())
    held = np.random.default_rng(seed).choice(lists, size=max(1, int(len(lists) * fraction)), replace=False)
    mask = examples["list_id"].isin(held)
    return examples[~mask].reset_index(drop=True), examples[mask].reset_index(drop=True)


def train_ranker(examples: pd.DataFrame, columns: list[Column], config: RankerTrainConfig = RankerTrainConfig(),
                 progress: Callable[[str], None] = print, version: str | None = None) -> TrainedRanker:
    """Fit the encoder, then ``config.members`` networks (seeds seed, seed+1, ...) on ``examples``
    (ranker_data.LIST_COLUMNS + feature columns), each stopped early on the validation lists."""
    torch.set_num_threads(config.threads)
    train, val = split_lists(examples, config.validation_fraction, config.seed)
    encoder = FeatureEncoder(columns).fit(train, train["candidate_score"].to_numpy(),
                                          train["embedding_score"].to_numpy(), train["list_id"].to_numpy())
    sizes = tuple(len(encoder.vocab[c.ref]) + 1 for c in encoder.categorical)
    torch.manual_seed(config.seed)
    ensemble = Ensemble(WideDeepConfig(encoder.dense_size, sizes, encoder.wide_buckets), config.members)
    x_train, y_train, g_train = _encode(encoder, train)
    x_val, y_val, g_val = _encode(encoder, val)
    trained = TrainedRanker(WideDeepRanker(version or new_version(), encoder, ensemble))
    progress(f"ranker: {len(train):,} train rows ({int(y_train.sum()):,} positive) in {train['list_id'].nunique()} "
             f"lists, {len(val):,} validation rows; {ensemble.config.deep_inputs} deep + {encoder.wide_buckets} wide "
             f"inputs, {config.loss} loss, {config.members} member(s)")
    for member, net in enumerate(ensemble.members):
        assert isinstance(net, WideDeep)
        seed = config.seed + member
        torch.manual_seed(seed)
        optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        best, best_state, waited = float("inf"), copy.deepcopy(net.state_dict()), 0
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            train_loss = _epoch(net, optimiser, x_train, y_train, g_train, config, generator)
            val_loss, val_auc = _validate(net, x_val, y_val, g_val, config.loss)
            trained.history.append({"member": member, "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                    "val_auc": val_auc})
            progress(f"ranker {member + 1}/{config.members} epoch {epoch}/{config.epochs}: "
                     f"train loss {train_loss:.4f}, val loss {val_loss:.4f}, val AUC {val_auc:.4f} "
                     f"({time.perf_counter() - started:.1f}s)")
            if val_loss < best - 1e-5:
                best, best_state, waited, trained.best_epoch = val_loss, copy.deepcopy(net.state_dict()), 0, epoch
            else:
                waited += 1
                if waited >= config.patience:
                    progress(f"ranker {member + 1}/{config.members}: early stop, best epoch {trained.best_epoch}")
                    break
        net.load_state_dict(best_state)
    ensemble.eval()
    return trained


def _epoch(net: WideDeep, optimiser: torch.optim.Optimizer, x: Encoded, y: torch.Tensor, groups: torch.Tensor,
           config: RankerTrainConfig, generator: torch.Generator) -> float:
    """One pass over the lists in random order, ``batch_size`` rows of whole lists per step; mean loss."""
    net.train()
    bounds = torch.cat([torch.tensor([0]), torch.nonzero(groups[1:] != groups[:-1]).squeeze(1) + 1,
                        torch.tensor([len(groups)])])
    lists_per_batch = max(1, int(config.batch_size * (len(bounds) - 1) / max(len(groups), 1)))
    order = torch.randperm(len(bounds) - 1, generator=generator)
    total = 0.0
    for start in range(0, len(order), lists_per_batch):
        chosen = order[start:start + lists_per_batch]
        rows = torch.cat([torch.arange(int(bounds[i]), int(bounds[i + 1])) for i in chosen])
        loss = ranking_loss(net(_rows(x, rows)), y[rows], groups[rows], config.loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total += loss.item() * len(chosen)
    return total / max(len(order), 1)


def ranking_loss(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, kind: str) -> torch.Tensor:
    """``bce``: per row. ``softmax``: per list, -log of each positive's share of the list's softmax,
    plus a light BCE term so scores stay comparable across lists (AUC)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    if kind == "bce":
        return bce
    codes = torch.unique_consecutive(groups, return_inverse=True)[1]
    n = int(codes.max()) + 1 if len(codes) else 0
    top = torch.full((n,), -torch.inf).scatter_reduce(0, codes, logits.detach(), "amax")
    lse = torch.log(torch.zeros(n).index_add(0, codes, torch.exp(logits - top[codes]))) + top
    positive = labels > 0
    if not bool(positive.any()):
        return 0.1 * bce
    return (lse[codes] - logits)[positive].mean() + 0.1 * bce


def _encode(encoder: FeatureEncoder, frame: pd.DataFrame) -> tuple[Encoded, torch.Tensor, torch.Tensor]:
    encoded = encoder.encode(frame, frame["candidate_score"].to_numpy(), frame["embedding_score"].to_numpy(),
                             frame["list_id"].to_numpy())
    return (encoded, torch.tensor(frame["label"].to_numpy(), dtype=torch.float32),
            torch.tensor(frame["list_id"].to_numpy(), dtype=torch.int64))


@torch.no_grad()
def _validate(net: WideDeep, x: Encoded, y: torch.Tensor, groups: torch.Tensor, kind: str) -> tuple[float, float]:
    net.eval()
    logits = net(x)
    auc = float(roc_auc_score(y.numpy(), logits.numpy())) if 0 < float(y.sum()) < len(y) else float("nan")
    return float(ranking_loss(logits, y, groups, kind)), auc


def new_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Train and validation loss, and validation AUC, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for member in sorted({int(h.get("member", 0)) for h in history}):
        rows = [h for h in history if int(h.get("member", 0)) == member]
        epochs = [h["epoch"] for h in rows]
        left.plot(epochs, [h["train_loss"] for h in rows], marker="o", label=f"train {member + 1}")
        left.plot(epochs, [h["val_loss"] for h in rows], marker="o", linestyle="--", label=f"validation {member + 1}")
        right.plot(epochs, [h["val_auc"] for h in rows], marker="o", label=f"member {member + 1}")
    left.set(xlabel="epoch", ylabel="loss", title="ranker loss per ensemble member")
    left.legend(fontsize=7)
    right.set(xlabel="epoch", ylabel="AUC", title="validation AUC")
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the model store --------------------------------------------------------------------------------------
def save_ranker(trained: TrainedRanker, service: str, data_start: datetime, data_end: datetime,
                metrics: dict[str, float], home: Path | None = None) -> str:
    """Write the ranker to the model store; returns its tag (``ranker:<version>``)."""
    ranker = trained.ranker
    labels = {"feature_service": service, "stage": "ranking", "kind": "wide_and_deep"}
    metadata = {"version": ranker.version, "feature_service": service, "data_start": data_start.isoformat(),
                "data_end": data_end.isoformat(), "best_epoch": trained.best_epoch,
                "deep_inputs": ranker.model.config.deep_inputs, "wide_buckets": ranker.model.config.wide_buckets,
                "metrics": json.loads(json.dumps(metrics)), "history": trained.history}
    with bentoml.models.create(f"{MODEL_NAME}:{ranker.version}", labels=labels, metadata=metadata,
                               module=__name__, _model_store=model_store(home)) as model:
        torch.save(to_checkpoint(ranker), model.path_of(CHECKPOINT))
        if trained.reference is not None:
            trained.reference.to_parquet(model.path_of(REFERENCE), index=False)
    return f"{MODEL_NAME}:{ranker.version}"
