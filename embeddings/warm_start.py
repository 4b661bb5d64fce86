"""Warm start: a new two-tower model begins from a saved version's weights instead of at random.

The new vocabulary is built from the data as always; each id the old vocabulary also knows (users, items,
categories, tags, title words) gets the old model's row, a new id the usual random one, and the towers' dense
layers are copied when their shapes match. Training then needs only the events the old model has not seen plus
a replay sample of those it has (`TrainConfig.replay_share`), for a few epochs (`TrainConfig.warm_epochs`) at a
lower learning rate (`TrainConfig.warm_learning_rate`: a fresh Adam's first steps move every weight by about the
full rate whatever its gradient, and at the scratch rate undid much of what the old model knew; see
`bench/warm_start.py`).
A folder that cannot be warm-started from (no saved weights or vocabulary, another embedding width, or a model
that saw events at or after the new model's `until`, which would leak the evaluated day into it) is reported in
`Start.note` and the model trains from scratch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embeddings.two_tower import TwoTower
from embeddings.vocabulary import Vocabulary

TABLES = {"user_id": "users", "item_id": "items", "category": "categories", "tags": "tags", "words": "words"}
CHECKPOINT = "two_tower"  # the checkpoint's folder inside models/<version>/


@dataclass(frozen=True)
class Start:
    """How a training run began, recorded in the checkpoint's meta.json (`start`)."""

    warm_from: str | None = None  # the version whose weights were copied; None: from scratch
    note: str = "from scratch"
    since: str | None = None  # warm: examples are the events after this moment plus a replay sample
    replay_share: float | None = None  # warm: the share of the earlier events replayed
    learning_rate: float | None = None  # warm: the learning rate of its epochs
    epochs: int | None = None  # the epochs trained
    copied: dict[str, int] = field(default_factory=dict)  # rows copied from the old model, per table
    new: dict[str, int] = field(default_factory=dict)  # ids the old model did not know, per table

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Source:
    """A saved version to warm-start from: its weights, vocabulary and the end of its data window."""

    version: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    vocab: Vocabulary
    data_end: datetime


def checkpoint_folder(folder: Path) -> Path:
    """The two-tower checkpoint of a version folder (`models/<version>/two_tower`), or the folder itself."""
    return folder / CHECKPOINT if (folder / CHECKPOINT).is_dir() else folder


def read_source(folder: Path) -> Source | str:
    """The saved version in `folder` (a `models/<version>` folder or its checkpoint), or why it cannot be used."""
    checkpoint = checkpoint_folder(folder)
    missing = [name for name in ("model.pt", "vocabulary.json", "meta.json") if not (checkpoint / name).is_file()]
    if missing:
        return f"from scratch: {folder} has no saved {', '.join(missing)} to warm-start from"
    saved = torch.load(checkpoint / "model.pt", weights_only=True)
    meta = json.loads((checkpoint / "meta.json").read_text())
    return Source(meta["version"], saved["config"], saved["state"], Vocabulary.load(checkpoint / "vocabulary.json"),
                  datetime.fromisoformat(meta["data_end"]))


def incompatible(source: Source, model: TwoTower, until: datetime | None = None) -> str | None:
    """Why the source's weights cannot seed this model, if they cannot: another embedding width or hidden size, or
    a data window reaching `until` (what the new model must not have seen, e.g. the day it is evaluated on)."""
    if until is not None and source.data_end >= until:
        return (f"from scratch: {source.version} was trained on events up to {source.data_end.isoformat()}, "
                f"not only before {until.isoformat()}")
    for key in ("dim", "hidden"):
        old, new = source.config.get(key), getattr(model.config, key)
        if old != new:
            return f"from scratch: {source.version} has {key} {old}, this model {new}"
    return None


def shared_rows(old: dict[str, int], new: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(new indexes, old indexes) of the ids both vocabularies know, index 0 ("unknown") included."""
    common = [key for key in new if key in old]
    return (np.array([0, *(new[k] for k in common)], dtype=np.int64),
            np.array([0, *(old[k] for k in common)], dtype=np.int64))


@torch.no_grad()
def warm_start(model: TwoTower, vocab: Vocabulary, source: Source, replay_share: float,
               learning_rate: float | None = None) -> Start:
    """Copy the source's rows of the ids both vocabularies know, and its dense layers where shapes match."""
    copied, new = {}, {}
    for table, space in TABLES.items():
        target = getattr(model, table).weight
        to, frm = shared_rows(getattr(source.vocab, space), getattr(vocab, space))
        target[torch.from_numpy(to)] = source.state[f"{table}.weight"][torch.from_numpy(frm)].to(target.dtype)
        copied[space], new[space] = len(to) - 1, len(getattr(vocab, space)) - (len(to) - 1)
    state = model.state_dict()
    dense = {k: v for k, v in source.state.items()
             if k.split(".")[0] not in TABLES and k in state and state[k].shape == v.shape}
    model.load_state_dict(dense, strict=False)
    copied["dense_tensors"] = len(dense)
    note = (f"warm start from {source.version}: rows of {copied['users']:,} users and {copied['items']:,} items "
            f"copied ({new['users']:,} users and {new['items']:,} items new)")
    return Start(source.version, note, source.data_end.isoformat(), replay_share, learning_rate, copied=copied,
                 new=new)
