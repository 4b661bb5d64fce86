"""Training the two-tower model on the lake, and exporting its user and item vectors.

A checkpoint stores the model's config, weights, vocabulary and the data window it was trained on
(nanoGPT style), so the model and every artifact built from it can be rebuilt and described. With
`TrainConfig.warm_start` a model begins from a saved version (`embeddings.warm_start`) and trains
`warm_epochs`, at `warm_learning_rate`, on the events that version has not seen plus a replay sample of the others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from embeddings.stream import InteractionStream, frame_tables, lake_days, prefetched
from embeddings.two_tower import TwoTower, TwoTowerConfig
from embeddings.vocabulary import MAX_TAGS, MAX_WORDS, Vocabulary
from embeddings.warm_start import Start, incompatible, read_source, warm_start
from recsys.errors import InvalidInputError
from recsys.stores.lake import Lake

CACHE_BYTES = 512 * 2**20  # lakes whose examples fit in this are read once and replayed in later epochs
SPARSE_ABOVE = 100_000  # users + items beyond which the id tables get sparse gradients (dense Adam over
# every row each step dominates then: 1.8k vs. 6.8k examples/s on 200k users, 50k items, 2 cores)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 1024
    learning_rate: float = 2e-3
    history: int = 20
    dim: int = 128
    shuffle_buffer: int = 50_000
    seed: int = 7
    threads: int = 1  # torch intra-op threads; batches are prepared on a second, background, thread
    until: datetime | None = None  # train on events before this moment (a temporal split)
    max_steps: int | None = None  # stop after this many batches in all (benchmarks on huge lakes)
    sparse_ids: bool | None = None  # sparse id-table gradients; None: when users + items > SPARSE_ABOVE
    warm_start: Path | None = None  # a models/<version> folder (or its checkpoint) to begin from; None: scratch
    warm_epochs: int = 2  # epochs of a warm start (a folder that cannot be used trains `epochs` from scratch)
    replay_share: float = 0.05  # warm start: share of the events the old version saw that are trained on again
    warm_learning_rate: float = 5e-4  # warm start: a fresh Adam at `learning_rate` first undoes much of the old model


@dataclass
class Trained:
    model: TwoTower
    vocab: Vocabulary
    content: dict[str, np.ndarray]
    losses: list[float]
    examples_per_second: float
    data_start: datetime
    data_end: datetime
    version: str
    start: Start = field(default_factory=Start)  # from scratch, or warm from which version


def content_by_index(vocab: Vocabulary, items: pd.DataFrame) -> dict[str, np.ndarray]:
    """Item content arrays whose row k is the item with vocabulary index k (row 0: unknown)."""
    ordered = items.assign(_idx=items["item_id"].map(vocab.items)).dropna(subset=["_idx"]).sort_values("_idx")
    content = vocab.item_content(ordered)
    empty = {"item": np.zeros(1, np.int64), "category": np.zeros(1, np.int64),
             "tags": np.zeros((1, MAX_TAGS), np.int64), "words": np.zeros((1, MAX_WORDS), np.int64)}
    return {k: np.concatenate([empty[k], v]) for k, v in content.items()}


def train(lake: Lake, config: TrainConfig, progress: Callable[[str], None] = print) -> Trained:
    """Train on the lake's interactions (streamed a day at a time)."""
    items = lake.latest_snapshot("items")
    if items is None:
        raise InvalidInputError(f"no item catalog in the lake at {lake.root}; import data first")
    events = lake.interactions(columns=["user_id", "item_id", "event_time"])
    return _train(items, events, lake_days(lake.root), config, progress)


def train_frame(
    items: pd.DataFrame, frame: pd.DataFrame, config: TrainConfig, progress: Callable[[str], None] = print
) -> Trained:
    """Train on an in-memory frame of (user_id, item_id, event_time) rows, e.g. an evaluation split."""
    events = pa.Table.from_pandas(frame[["user_id", "item_id", "event_time"]], preserve_index=False)
    return _train(items, events, frame_tables(frame), config, progress)


def _train(
    items: pd.DataFrame, events: pa.Table, tables: Callable[[], Iterator[pa.Table]], config: TrainConfig,
    progress: Callable[[str], None],
) -> Trained:
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)  # tiny optimiser moments otherwise slow later epochs several-fold
    if config.until is not None:
        events = events.filter(pc.less(events["event_time"], config.until))
    if events.num_rows == 0:
        raise InvalidInputError("no interactions to train on")
    item_counts = events.group_by("item_id").aggregate([("item_id", "count")]).to_pandas()
    vocab = Vocabulary.build(pd.Series(pc.unique(events["user_id"]).to_pylist()), items)
    content = content_by_index(vocab, items)
    content["log_q"] = _log_q(vocab, item_counts, len(content["item"]))
    large = len(vocab.users) + len(vocab.items) > SPARSE_ABOVE
    model = TwoTower(TwoTowerConfig(
        n_users=len(vocab.users), n_items=len(vocab.items), n_categories=len(vocab.categories),
        n_tags=len(vocab.tags), n_words=len(vocab.words), dim=config.dim, history=config.history,
        sparse=large if config.sparse_ids is None else config.sparse_ids,
    ))
    start = _start(model, vocab, config, progress)
    epochs = config.epochs if start.warm_from is None else config.warm_epochs
    since = None if start.since is None else datetime.fromisoformat(start.since)
    cache = epochs > 1 and _examples(events, since, config) * config.history * 4 <= CACHE_BYTES
    stream = InteractionStream(tables, vocab, content, history=config.history, batch_size=config.batch_size,
                               shuffle_buffer=config.shuffle_buffer, seed=config.seed, until=config.until, cache=cache,
                               since=since, replay_share=config.replay_share)
    optimisers = model.optimisers(config.learning_rate if start.warm_from is None else config.warm_learning_rate)
    losses: list[float] = []
    examples, started = 0, time.perf_counter()
    model.train()
    for epoch in range(epochs):
        steps_left = None if config.max_steps is None else config.max_steps - len(losses)
        epoch_losses, epoch_examples = _epoch(model, optimisers, prefetched(stream), steps_left, progress)
        losses += epoch_losses
        examples += epoch_examples
        rate = examples / (time.perf_counter() - started)
        progress(f"epoch {epoch + 1}/{epochs}: loss {np.mean(epoch_losses or [np.nan]):.3f}, "
                 f"{rate:,.0f} examples/s")
        if config.max_steps is not None and len(losses) >= config.max_steps:
            break
    model.eval()
    times = pc.min_max(events["event_time"])
    first, end = times["min"].as_py(), times["max"].as_py()
    return Trained(model, vocab, content, losses, examples / (time.perf_counter() - started), first, end,
                   version=f"two-tower-{end:%Y%m%d}-s{config.seed}", start=replace(start, epochs=epochs))


def _start(model: TwoTower, vocab: Vocabulary, config: TrainConfig, progress: Callable[[str], None]) -> Start:
    """Warm-start the model from `config.warm_start` if it can be; otherwise it stays as initialised."""
    if config.warm_start is None:
        return Start()
    source = read_source(config.warm_start)
    if isinstance(source, str):
        start = Start(note=source)
    elif (reason := incompatible(source, model, config.until)) is not None:
        start = Start(note=reason)
    else:
        start = warm_start(model, vocab, source, config.replay_share, config.warm_learning_rate)
    progress(start.note)
    return start


def _examples(events: pa.Table, since: datetime | None, config: TrainConfig) -> int:
    """About the examples one pass yields: every event, or a warm start's new events and replay sample."""
    if since is None:
        return events.num_rows
    new = pc.sum(pc.greater(events["event_time"], since)).as_py() or 0
    return new + int(config.replay_share * (events.num_rows - new))


def _epoch(
    model: TwoTower, optimisers: list[torch.optim.Optimizer], batches: Iterator[dict[str, torch.Tensor]],
    steps: int | None, progress: Callable[[str], None], report_every: int = 1000,
) -> tuple[list[float], int]:
    """One pass over the batches (at most `steps` of them): the losses and the examples seen."""
    losses: list[float] = []
    examples, started = 0, time.perf_counter()
    for batch in batches:
        if steps is not None and len(losses) >= steps:
            break
        users = model.users(batch["user"], batch["history"])
        vectors = model.items(batch["item"], batch["category"], batch["tags"], batch["words"])
        loss = model.loss(users, vectors, batch["item"], batch.get("log_q"))
        for optimiser in optimisers:
            optimiser.zero_grad()
        loss.backward()
        for optimiser in optimisers:
            optimiser.step()
        losses.append(loss.item())
        examples += len(batch["item"])
        if len(losses) % report_every == 0:
            progress(f"  step {len(losses):,}: loss {np.mean(losses[-report_every:]):.3f}, "
                     f"{examples / (time.perf_counter() - started):,.0f} examples/s")
    return losses, examples


def _log_q(vocab: Vocabulary, counts: pd.DataFrame, size: int) -> np.ndarray:
    """log of each item's share of training events, by vocabulary index (unseen items: one event)."""
    share = np.ones(size, dtype=np.float32)
    index = counts["item_id"].map(vocab.items).fillna(0).astype(int).to_numpy()
    share[index] += counts["item_id_count"].to_numpy(dtype=np.float32)
    return np.log(share / share.sum()).astype(np.float32)


@torch.no_grad()
def item_vectors(trained: Trained, items: pd.DataFrame, batch: int = 8192) -> np.ndarray:
    """Unit vectors of these catalog items (unknown ids embed through their content alone)."""
    content = trained.vocab.item_content(items)
    out = []
    for start in range(0, len(items), batch):
        part = {k: torch.from_numpy(v[start:start + batch]) for k, v in content.items()}
        out.append(trained.model.items(part["item"], part["category"], part["tags"], part["words"]).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, trained.model.config.dim), np.float32)


@torch.no_grad()
def user_vectors(trained: Trained, users: list[str], histories: list[list[str]]) -> np.ndarray:
    """Unit vectors of users from their ids and recent items (newest last)."""
    size = trained.model.config.history
    history = np.zeros((len(users), size), dtype=np.int64)
    for row, seen in enumerate(histories):
        indexes = [trained.vocab.items.get(i, 0) for i in seen][-size:]
        if indexes:
            history[row, -len(indexes):] = indexes
    ids = torch.tensor([trained.vocab.users.get(u, 0) for u in users], dtype=torch.int64)
    return trained.model.users(ids, torch.from_numpy(history)).numpy().astype(np.float32)


def save(trained: Trained, folder: Path) -> None:
    """Checkpoint: config, weights, vocabulary, data window, version, and the loss curve (JSON + PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"config": trained.model.config.as_dict(), "state": trained.model.state_dict()}, folder / "model.pt")
    trained.vocab.save(folder / "vocabulary.json")
    meta = {"version": trained.version, "data_start": trained.data_start.isoformat(),
            "data_end": trained.data_end.isoformat(), "examples_per_second": trained.examples_per_second,
            "start": trained.start.as_dict(), "losses": trained.losses}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    plot_losses(trained.losses, folder / "loss.png")


def load(folder: Path, items: pd.DataFrame) -> Trained:
    checkpoint = torch.load(folder / "model.pt", weights_only=True)
    model = TwoTower(TwoTowerConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state"])
    model.eval()
    vocab = Vocabulary.load(folder / "vocabulary.json")
    meta = json.loads((folder / "meta.json").read_text())
    return Trained(model, vocab, content_by_index(vocab, items), meta["losses"], meta["examples_per_second"],
                   datetime.fromisoformat(meta["data_start"]), datetime.fromisoformat(meta["data_end"]),
                   meta["version"], Start(**meta.get("start", {})))


def plot_losses(losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(losses, linewidth=0.6, alpha=0.5, label="batch")
    window = max(1, len(losses) // 50)
    axis.plot(np.convolve(losses, np.ones(window) / window, mode="valid"), label=f"mean of {window}")
    axis.set_xlabel("step")
    axis.set_ylabel("in-batch softmax loss")
    axis.set_title("two-tower training")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


__all__ = ["TrainConfig", "Trained", "train_frame", "item_vectors", "load", "save", "train", "user_vectors"]
