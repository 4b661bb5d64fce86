"""Warm start: a new model keeps the old model's rows of the ids both know, trains on the new events plus a replay
sample (histories intact), reaches the from-scratch model's recall with a fraction of its steps, and a folder it
cannot start from trains from scratch with a note."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.warm_start import recall
from embeddings.stream import InteractionStream, frame_tables
from embeddings.train import TrainConfig, content_by_index, save, train_frame
from embeddings.two_tower import TwoTower, TwoTowerConfig
from embeddings.vocabulary import Vocabulary
from embeddings.warm_start import TABLES, Source, read_source, warm_start
from ingestion.generic import GenericSource
from ingestion.synthetic import SyntheticConfig, generate


def quiet(message: str) -> None:
    """Training progress, unprinted."""


def catalog(ids: list[int], genres: list[str], words: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{k}" for k in ids], "title": [f"{words[k % len(words)]} film" for k in ids],
                         "category": [genres[k % len(genres)] for k in ids],
                         "tags": [[genres[k % len(genres)], f"tag{k % 3}"] for k in ids]})


def model(vocab: Vocabulary, seed: int, dim: int = 16) -> TwoTower:
    torch.manual_seed(seed)
    return TwoTower(TwoTowerConfig(n_users=len(vocab.users), n_items=len(vocab.items),
                                   n_categories=len(vocab.categories), n_tags=len(vocab.tags),
                                   n_words=len(vocab.words), dim=dim, hidden=32))


def test_shared_ids_keep_their_rows_and_new_ids_start_as_usual() -> None:
    old_vocab = Vocabulary.build(pd.Series(["u1", "u2", "u3"]), catalog([1, 2, 3, 4], ["drama", "comedy"], ["red"]))
    new_vocab = Vocabulary.build(pd.Series(["u0", "u2", "u3", "u9"]),
                                 catalog([2, 3, 4, 5, 6], ["comedy", "drama", "horror"], ["blue", "red"]))
    old = model(old_vocab, seed=1)
    fresh, warm = model(new_vocab, seed=2), model(new_vocab, seed=2)
    start = warm_start(warm, new_vocab, Source("old-version", old.config.as_dict(), old.state_dict(), old_vocab,
                                               datetime(2024, 1, 1, tzinfo=UTC)), replay_share=0.3)

    for table, space in TABLES.items():
        before, after = getattr(old_vocab, space), getattr(new_vocab, space)
        old_rows, warm_rows, fresh_rows = (getattr(m, table).weight.detach() for m in (old, warm, fresh))
        for key, index in after.items():
            expected = old_rows[before[key]] if key in before else fresh_rows[index]
            assert torch.equal(warm_rows[index], expected), (table, key)
        assert torch.equal(warm_rows[0], old_rows[0])  # "unknown" keeps its meaning
        assert start.copied[space] == len(before.keys() & after.keys()) > 0
        assert start.new[space] == len(after.keys() - before.keys())
    assert start.copied["dense_tensors"] == 8  # both MLPs' weights and biases
    for name, value in old.state_dict().items():
        if name.split(".")[0] not in TABLES:
            assert torch.equal(warm.state_dict()[name], value), name
    assert start.warm_from == "old-version" and start.since == "2024-01-01T00:00:00+00:00"


def test_a_warm_stream_trains_on_new_events_and_a_replay_sample_with_exact_histories() -> None:
    rng = np.random.default_rng(4)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    frame = pd.DataFrame({"user_id": [f"u{k}" for k in rng.integers(0, 30, 4000)],
                          "item_id": [f"i{k}" for k in rng.integers(0, 60, 4000)],
                          "event_time": [t0 + timedelta(minutes=k) for k in range(4000)]})
    items = catalog(list(range(60)), ["drama", "comedy"], ["red", "blue"])
    vocab = Vocabulary.build(frame["user_id"], items)
    since = t0 + timedelta(minutes=2999)  # the old model's last event: 1000 events after it

    def examples(**options: object) -> set[tuple[int, tuple[int, ...], int]]:
        stream = InteractionStream(frame_tables(frame), vocab, content_by_index(vocab, items), history=5,
                                   **options)  # type: ignore[arg-type]
        return {(int(u), tuple(h.tolist()), int(i)) for chunk in stream.examples() for u, h, i in zip(*chunk)}

    everything = examples()  # events are distinct by their (user, history, item) here
    assert len(everything) == 4000
    new = examples(since=since, replay_share=0.0)
    assert len(new) == 1000 and new <= everything
    replayed = examples(since=since, replay_share=0.25)
    assert new < replayed <= everything and 600 < len(replayed - new) < 900
    assert replayed == examples(since=since, replay_share=0.25)  # the same sample every pass


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("warm-start")
    generate(SyntheticConfig(users=1_000, items=2_000, interactions=60_000, days=20, categories=30, seed=11,
                             taste_concentration=0.1, explore_rate=0.05), root, show_progress=False)
    source = GenericSource(root)
    items = source.items()
    assert items is not None
    frame = pd.concat(chunk.frame for chunk in source.interaction_chunks())
    return items, frame[frame["action_type"] != "skip"][["user_id", "item_id", "event_time"]]


def test_a_warm_start_matches_training_from_scratch_with_a_fraction_of_the_steps(
    world: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path,
) -> None:
    """Model A on days < D-1; B on days < D warm from A (2 epochs), from scratch (all epochs) and from scratch for
    as many steps as the warm start took; measured by next-item recall@100 on the events from day D (2,600)."""
    items, frame = world
    day = frame["event_time"].max().floor("D") - pd.Timedelta(days=2)
    config = TrainConfig(epochs=3, batch_size=256, shuffle_buffer=5_000, seed=3, warm_epochs=2)
    first = train_frame(items, frame, replace(config, until=day - pd.Timedelta(days=1)), progress=quiet)
    save(first, tmp_path / "models" / first.version / "two_tower")

    warm = train_frame(items, frame, replace(config, until=day, warm_start=tmp_path / "models" / first.version),
                       progress=quiet)
    scratch = train_frame(items, frame, replace(config, until=day), progress=quiet)
    short = train_frame(items, frame, replace(config, until=day, max_steps=len(warm.losses)), progress=quiet)
    assert warm.start.warm_from == first.version and warm.start.epochs == 2
    assert len(warm.losses) < len(scratch.losses) / 4
    measured = {name: recall(model, items, frame, day) for name, model in
                (("warm", warm), ("scratch", scratch), ("short", short))}
    assert measured["warm"]["events"] > 2_000
    at_100 = {name: figures["recall@100"] for name, figures in measured.items()}
    assert at_100["warm"] > at_100["scratch"] - 0.025, at_100  # about two standard errors (0.526 against 0.522)
    assert at_100["warm"] > at_100["short"] + 0.05, at_100  # what the copied rows are worth (0.526 against 0.391)


def test_a_folder_without_weights_trains_from_scratch_with_a_note(
    world: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path,
) -> None:
    items, frame = world
    (tmp_path / "old" / "two_tower").mkdir(parents=True)
    (tmp_path / "old" / "two_tower" / "meta.json").write_text(json.dumps({"version": "old"}))
    assert isinstance(read_source(tmp_path / "old"), str)
    config = TrainConfig(epochs=1, batch_size=512, max_steps=3, warm_epochs=5, warm_start=tmp_path / "old")
    trained = train_frame(items, frame, config, progress=quiet)
    assert trained.start.warm_from is None and trained.start.epochs == 1
    assert "has no saved model.pt, vocabulary.json" in trained.start.note
    save(trained, tmp_path / "new")
    recorded = json.loads((tmp_path / "new" / "meta.json").read_text())["start"]
    assert recorded["warm_from"] is None and recorded["note"] == trained.start.note


def test_another_embedding_width_trains_from_scratch_with_a_note(
    world: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path,
) -> None:
    items, frame = world
    narrow = train_frame(items, frame, TrainConfig(epochs=1, max_steps=2, dim=16), progress=quiet)
    save(narrow, tmp_path / "narrow")
    wide = train_frame(items, frame, TrainConfig(epochs=1, max_steps=2, warm_start=tmp_path / "narrow"),
                       progress=quiet)
    assert wide.start.warm_from is None and "dim 16" in wide.start.note


def test_a_version_that_saw_the_new_window_is_not_started_from(
    world: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path,
) -> None:
    """A version trained on everything (e.g. by `recsys build-candidates`) has seen the day the new model is measured
    on: starting from it would leak that day into the model, so the new one trains from scratch."""
    items, frame = world
    everything = train_frame(items, frame, TrainConfig(epochs=1, max_steps=2), progress=quiet)
    save(everything, tmp_path / "everything")
    day = frame["event_time"].max().floor("D")
    trained = train_frame(items, frame, TrainConfig(epochs=1, max_steps=2, until=day,
                                                    warm_start=tmp_path / "everything"), progress=quiet)
    assert trained.start.warm_from is None and "not only before" in trained.start.note
