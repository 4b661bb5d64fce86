"""A streaming training set from the Parquet lake: (user, recent items, next item) examples.

Day partitions are read in time order, one at a time; each user's last `history` items live in a
small ring buffer, so memory is bounded by users × history whatever the lake's size. A shuffle
buffer mixes examples across days; batches come out as tensors ready for the towers.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset

from embeddings.vocabulary import Vocabulary

Batch = dict[str, torch.Tensor]


def lake_days(lake_root: Path) -> Callable[[], Iterator[pa.Table]]:
    """The lake's day partitions, oldest first, one table at a time."""
    days = sorted((lake_root / "interactions").glob("event_date=*/*.parquet"))

    def tables() -> Iterator[pa.Table]:
        for day in days:
            yield pq.read_table(day, columns=["user_id", "item_id", "event_time", "action_type"])
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
        until: datetime | None = None,
    ) -> None:
        """`tables` yields time-ordered tables (user_id, item_id, event_time, action_type) on each call."""
        super().__init__()
        self.tables = tables
        self.vocab, self.content = vocab, {k: torch.from_numpy(v) for k, v in content.items()}
        self.history, self.batch_size, self.shuffle_buffer = history, batch_size, shuffle_buffer
        self.seed, self.until = seed, until
        self.epoch = 0

    def events(self) -> Iterator[tuple[int, list[int], int]]:
        """(user index, their previous items newest last, item index) in time order."""
        recent: dict[int, deque[int]] = {}
        for table in self.tables():
            keep = pc.not_equal(table["action_type"], "skip")
            if self.until is not None:
                keep = pc.and_(keep, pc.less(table["event_time"], self.until))
            table = table.filter(keep).sort_by("event_time")
            users = [self.vocab.users.get(u, 0) for u in table.column("user_id").to_pylist()]
            items = [self.vocab.items.get(i, 0) for i in table.column("item_id").to_pylist()]
            for user, item in zip(users, items):
                seen = recent.setdefault(user, deque(maxlen=self.history))
                if item:
                    yield user, list(seen), item
                    seen.append(item)

    def __iter__(self) -> Iterator[Batch]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        buffer: list[tuple[int, list[int], int]] = []
        batch: list[tuple[int, list[int], int]] = []
        for example in self.events():
            if len(buffer) < self.shuffle_buffer:
                buffer.append(example)
                continue
            slot = rng.randrange(len(buffer))
            batch.append(buffer[slot])
            buffer[slot] = example
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []
        rng.shuffle(buffer)
        for example in buffer:
            batch.append(example)
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []
        if len(batch) > 1:
            yield self._collate(batch)

    def _collate(self, examples: list[tuple[int, list[int], int]]) -> Batch:
        history = np.zeros((len(examples), self.history), dtype=np.int64)
        for row, (_, seen, _) in enumerate(examples):
            if seen:
                history[row, -len(seen):] = seen
        items = torch.tensor([e[2] for e in examples], dtype=torch.int64)
        return {
            "user": torch.tensor([e[0] for e in examples], dtype=torch.int64),
            "history": torch.from_numpy(history),
            "item": items,
            "category": self.content["category"][items],
            "tags": self.content["tags"][items],
            "words": self.content["words"][items],
            **({"log_q": self.content["log_q"][items]} if "log_q" in self.content else {}),
        }
