"""A streaming training set from the Parquet lake: (user, recent items, next item) examples.

Day partitions are read in time order, one at a time, and turned into examples with array
operations a chunk of events at a time: each user's last `history` items live in one row of a
users × history matrix, so memory is bounded whatever the lake's size. A block shuffle buffer
mixes examples across days; batches come out as tensors ready for the towers, and `prefetched`
prepares them on a background thread while the model trains on the previous ones.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch
from torch.utils.data import IterableDataset

from embeddings.vocabulary import Vocabulary

Batch = dict[str, torch.Tensor]
Examples = tuple[np.ndarray, np.ndarray, np.ndarray]  # users (n,), histories (n, history), items (n,)
CHUNK = 65_536  # events turned into examples at once; bounds the (chunk × history) working arrays


def lake_days(lake_root: Path, days_per_read: int = 32) -> Callable[[], Iterator[pa.Table]]:
    """The lake's day partitions, oldest first, `days_per_read` days per table (small days are many)."""
    days = [str(day) for day in sorted((lake_root / "interactions").glob("event_date=*/*.parquet"))]

    def tables() -> Iterator[pa.Table]:
        for start in range(0, len(days), days_per_read):
            group = ds.dataset(days[start:start + days_per_read], format="parquet")
            yield group.to_table(columns=["user_id", "item_id", "event_time", "action_type"])
    return tables


def frame_tables(frame: pd.DataFrame) -> Callable[[], Iterator[pa.Table]]:
    """An in-memory training frame (user_id, item_id, event_time[, action_type]) as one table."""
    table = pa.Table.from_pandas(frame.assign(action_type=frame.get("action_type", "view"))[
        ["user_id", "item_id", "event_time", "action_type"]], preserve_index=False)
    return lambda: iter([table])


class InteractionStream(IterableDataset[Batch]):
    def __init__(
        self, tables: Callable[[], Iterator[pa.Table]], vocab: Vocabulary, content: dict[str, np.ndarray], *,
        history: int = 20, batch_size: int = 1024, shuffle_buffer: int = 50_000, seed: int = 7,
        until: datetime | None = None, cache: bool = False, since: datetime | None = None,
        replay_share: float = 1.0,
    ) -> None:
        """`tables` yields time-ordered tables (user_id, item_id, event_time, action_type) on each call.

        With `cache`, the first pass keeps its examples (int32) and later epochs replay them instead of
        reading the lake again: for lakes whose examples fit in memory. With `since` (a warm start), the
        examples are the events after it plus a seeded `replay_share` sample of the earlier ones (the same
        sample every pass); every event still enters the users' histories, so those stay exact.
        """
        super().__init__()
        self.tables = tables
        self.vocab, self.content = vocab, {k: torch.from_numpy(v) for k, v in content.items()}
        self.history, self.batch_size, self.shuffle_buffer = history, batch_size, shuffle_buffer
        self.seed, self.until = seed, until
        self.since, self.replay_share = since, replay_share
        self.epoch, self.cache = 0, cache
        self._cached: list[Examples] | None = None
        self._users = (pa.array(list(vocab.users), pa.string()), np.fromiter(vocab.users.values(), np.int64))
        self._items = (pa.array(list(vocab.items), pa.string()), np.fromiter(vocab.items.values(), np.int64))

    def examples(self) -> Iterator[Examples]:
        """Chunks of (user index, their previous items newest last, item index), events in time order."""
        if self._cached is not None:
            yield from self._cached
            return
        kept: list[Examples] = []
        for chunk in self._read():
            if self.cache:
                kept.append(tuple(part.astype(np.int32) for part in chunk))  # type: ignore[arg-type]
            yield chunk
        if self.cache:
            self._cached = kept

    def _read(self) -> Iterator[Examples]:
        recent = np.zeros((len(self.vocab.users) + 1, self.history), dtype=np.int64)
        replay = np.random.default_rng(self.seed)
        for table in self.tables():
            keep = pc.not_equal(table["action_type"], "skip")
            if self.until is not None:
                keep = pc.and_(keep, pc.less(table["event_time"], self.until))
            table = table.filter(keep).sort_by("event_time")
            users = _codes(table["user_id"], *self._users)
            items = _codes(table["item_id"], *self._items)
            known = items > 0
            users, items = users[known], items[known]
            wanted = None
            if self.since is not None:
                new = pc.greater(table["event_time"], self.since).to_numpy(zero_copy_only=False)[known]
                wanted = new | (replay.random(len(new)) < self.replay_share)
            for start in range(0, len(items), CHUNK):
                part = slice(start, start + CHUNK)
                yield _windows(recent, users[part], items[part], None if wanted is None else wanted[part])

    def __iter__(self) -> Iterator[Batch]:
        """Batches from a block shuffle: once twice `shuffle_buffer` examples wait, they are permuted
        and all but `shuffle_buffer` of them go out, so examples mix across days and chunks."""
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        pending: list[Examples] = []
        waiting = 0
        for chunk in self.examples():
            pending.append(chunk)
            waiting += len(chunk[0])
            if waiting >= 2 * self.shuffle_buffer:
                mixed = _shuffled(pending, rng)
                out = (waiting - self.shuffle_buffer) // self.batch_size * self.batch_size
                yield from self._batches(tuple(part[:out] for part in mixed))  # type: ignore[arg-type]
                pending, waiting = [tuple(part[out:] for part in mixed)], waiting - out  # type: ignore[list-item]
        if waiting:
            yield from self._batches(_shuffled(pending, rng), last=True)

    def _batches(self, examples: Examples, last: bool = False) -> Iterator[Batch]:
        users, histories, items = examples
        for start in range(0, len(items), self.batch_size):
            stop = start + self.batch_size
            if stop > len(items) and not (last and len(items) - start > 1):
                break
            yield self._collate(users[start:stop], histories[start:stop], items[start:stop])

    def _collate(self, users: np.ndarray, histories: np.ndarray, items: np.ndarray) -> Batch:
        item = torch.from_numpy(items.astype(np.int64))
        return {
            "user": torch.from_numpy(users.astype(np.int64)),
            "history": torch.from_numpy(histories.astype(np.int64)),
            "item": item,
            "category": self.content["category"][item],
            "tags": self.content["tags"][item],
            "words": self.content["words"][item],
            **({"log_q": self.content["log_q"][item]} if "log_q" in self.content else {}),
        }


def _codes(ids: pa.ChunkedArray, keys: pa.Array, codes: np.ndarray) -> np.ndarray:
    """Vocabulary indexes of these ids (0 for ids the vocabulary does not know)."""
    position = pc.index_in(ids.cast(pa.string()), value_set=keys).to_numpy(zero_copy_only=False)
    position = np.nan_to_num(position.astype(np.float64), nan=-1).astype(np.int64)
    return np.where(position >= 0, codes[np.maximum(position, 0)], 0)


def _windows(recent: np.ndarray, users: np.ndarray, items: np.ndarray, wanted: np.ndarray | None = None) -> Examples:
    """Each event's history (the user's previous `recent.shape[1]` items, zero-padded on the left),
    from `recent` (users × history, newest last) and the earlier events of the chunk; updates `recent`.
    With `wanted` (a mask over the events), only those events' examples come out; all update `recent`.

    Events are grouped by user (stable, so in time order); each group is laid out in one flat array
    as [the user's row of `recent`, then their items], and an event's history is the window just
    before it.
    """
    size = recent.shape[1]
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(users)]))
    flat = np.empty(len(items) + size * len(starts), dtype=np.int64)
    position = np.arange(len(items)) + size * (group + 1)
    flat[position] = items
    window = np.arange(size)
    flat[(starts + size * np.arange(len(starts)))[:, None] + window] = recent[users[starts]]
    histories = flat[position[:, None] - size + window]
    ends = np.r_[starts[1:], len(users)] - 1
    recent[users[starts]] = flat[position[ends][:, None] - size + 1 + window]
    if wanted is not None:
        wanted = wanted[order]
        return users[wanted], histories[wanted], items[wanted]
    return users, histories, items


def _shuffled(parts: list[Examples], rng: np.random.Generator) -> Examples:
    users, histories, items = (np.concatenate(column) for column in zip(*parts))
    order = rng.permutation(len(items))
    return users[order], histories[order], items[order]


def prefetched(batches: Iterable[Batch], depth: int = 8) -> Iterator[Batch]:
    """The same batches, prepared on a background thread up to `depth` ahead of the consumer, so data
    preparation (Arrow and numpy, which release the GIL) overlaps training on the other core."""
    ready: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(None)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            ready.put(error)

    worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
