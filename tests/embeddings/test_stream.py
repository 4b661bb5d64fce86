"""The streaming training set: array-built examples equal the per-event definition, batches cover
every example once per epoch, a later epoch replays the cache, and prefetching changes nothing."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from embeddings.stream import CHUNK, InteractionStream, _windows, frame_tables, prefetched
from embeddings.train import content_by_index
from embeddings.vocabulary import Vocabulary

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def per_event(users: np.ndarray, items: np.ndarray, size: int) -> list[tuple[int, tuple[int, ...], int]]:
    """The definition: each event's history is the user's previous `size` items, zero-padded left."""
    recent: dict[int, deque[int]] = {}
    out = []
    for user, item in zip(users.tolist(), items.tolist()):
        seen = recent.setdefault(user, deque(maxlen=size))
        out.append((user, tuple([0] * (size - len(seen)) + list(seen)), item))
        seen.append(item)
    return out


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_windows_match_the_per_event_definition_across_chunks(chunk: int) -> None:
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 12, 600), rng.integers(1, 50, 600)
    recent = np.zeros((12, 4), dtype=np.int64)
    got = []
    for start in range(0, len(users), chunk):
        u, h, i = _windows(recent, users[start:start + chunk], items[start:start + chunk])
        got += [(int(a), tuple(int(x) for x in b), int(c)) for a, b, c in zip(u, h, i)]
    assert sorted(got) == sorted(per_event(users, items, 4))


def stream(frame: pd.DataFrame, **options: object) -> InteractionStream:
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(20)], "title": "a film", "category": "drama",
                          "tags": [["t"]] * 20})
    vocab = Vocabulary.build(frame["user_id"], items)
    return InteractionStream(frame_tables(frame), vocab, content_by_index(vocab, items), history=3,
                             batch_size=8, shuffle_buffer=10, **options)  # type: ignore[arg-type]


def events(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame({"user_id": [f"u{k}" for k in rng.integers(0, 5, n)],
                         "item_id": [f"i{k}" for k in rng.integers(0, 20, n)],
                         "event_time": [T0 + timedelta(minutes=k) for k in range(n)]})


def test_an_epoch_yields_every_example_once_and_skips_are_not_examples() -> None:
    frame = events(101).assign(action_type="view")
    frame.loc[5, "action_type"] = "skip"
    batches = list(stream(frame))
    assert sum(len(b["item"]) for b in batches) == 100
    assert all(len(b["item"]) == 8 for b in batches[:-1])
    assert all(b["history"].shape[1] == 3 and b["tags"].shape[0] == len(b["item"]) for b in batches)


def test_a_cached_epoch_replays_the_same_examples_reshuffled() -> None:
    data = stream(events(2 * CHUNK // 1000), cache=True)

    def examples() -> list[tuple[int, tuple[int, ...], int]]:
        return sorted((int(u), tuple(h.tolist()), int(i)) for b in data
                      for u, h, i in zip(b["user"], b["history"], b["item"]))

    first, second = examples(), examples()
    assert data._cached is not None and first == second


def test_prefetching_yields_the_same_batches_and_passes_errors_on() -> None:
    frame = events(50)
    direct = [b["item"].tolist() for b in stream(frame, seed=3)]
    assert [b["item"].tolist() for b in prefetched(stream(frame, seed=3))] == direct

    def broken() -> object:
        yield from stream(frame)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        list(prefetched(broken()))  # type: ignore[arg-type]
