"""The two-tower model learns tastes from the lake, deterministically, and embeds new items by content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embeddings.train import TrainConfig, Trained, item_vectors, load, save, train, user_vectors
from ingestion.generic import GenericSource, load_into_lake
from ingestion.synthetic import SyntheticConfig, generate
from recsys.stores.lake import Lake

DATA = SyntheticConfig(users=300, items=200, interactions=20_000, days=20, categories=5, seed=11,
                       taste_concentration=0.1, explore_rate=0.05)
CONFIG = TrainConfig(epochs=4, batch_size=256, shuffle_buffer=5_000, seed=3)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("two-tower")
    generate(DATA, root / "synthetic", show_progress=False)
    lake = Lake(root / "lake")
    load_into_lake(GenericSource(root / "synthetic"), lake)
    return lake


@pytest.fixture(scope="module")
def trained(lake: Lake) -> Trained:
    return train(lake, CONFIG, progress=lambda message: None)


def test_loss_falls_and_runs_repeat_exactly(lake: Lake, trained: Trained) -> None:
    per_epoch = np.array_split(np.array(trained.losses), CONFIG.epochs)
    assert per_epoch[-1].mean() < np.mean(trained.losses[:5]) - 0.8 and per_epoch[-1].mean() < per_epoch[0].mean()
    again = train(lake, TrainConfig(**{**CONFIG.__dict__, "epochs": 1}), progress=lambda message: None)
    once = train(lake, TrainConfig(**{**CONFIG.__dict__, "epochs": 1}), progress=lambda message: None)
    assert again.losses == once.losses


def test_users_prefer_their_ground_truth_category(lake: Lake, trained: Trained, tmp_path: Path) -> None:
    items = lake.latest_snapshot("items")
    assert items is not None
    vectors = item_vectors(trained, items)
    events = lake.interactions(columns=["user_id", "item_id", "event_time"]).to_pandas().sort_values("event_time")
    truth = pd.read_parquet(Path(lake.root).parent / "synthetic" / "ground_truth" / "user_tastes.parquet")
    truth = truth.set_index("user_id")["favourite_category"]
    active = events["user_id"].value_counts().loc[lambda c: c >= 40].index[:60]
    histories = [events.loc[events["user_id"] == u, "item_id"].tolist() for u in active]
    users = user_vectors(trained, list(active), histories)
    top = np.argsort(-(users @ vectors.T), axis=1)[:, :20]
    categories = items["category"].to_numpy()
    share = np.mean([(categories[row] == truth[u]).mean() for u, row in zip(active, top)])
    assert share > 0.5  # chance is about 1 in 5


def test_new_items_embed_through_their_content(lake: Lake, trained: Trained) -> None:
    items = lake.latest_snapshot("items")
    assert items is not None
    vectors = item_vectors(trained, items)
    newcomer = items.iloc[[0]].assign(item_id="never-seen")
    fresh = item_vectors(trained, newcomer)[0]
    same = items["category"].to_numpy() == newcomer["category"].iloc[0]
    assert fresh @ vectors[same].mean(0) > fresh @ vectors[~same].mean(0)


def test_checkpoint_round_trip(lake: Lake, trained: Trained, tmp_path: Path) -> None:
    items = lake.latest_snapshot("items")
    assert items is not None
    save(trained, tmp_path / "model")
    assert (tmp_path / "model" / "loss.png").stat().st_size > 0
    restored = load(tmp_path / "model", items)
    assert restored.version == trained.version
    assert np.allclose(item_vectors(restored, items), item_vectors(trained, items))


def test_sparse_id_tables_train_and_reload(lake: Lake, tmp_path: Path) -> None:
    """Large vocabularies train their id tables with sparse gradients; the checkpoint remembers it."""
    config = TrainConfig(**{**CONFIG.__dict__, "epochs": 2, "sparse_ids": True})
    sparse = train(lake, config, progress=lambda message: None)
    assert sparse.model.config.sparse and np.isfinite(sparse.losses).all()
    assert np.mean(sparse.losses[-5:]) < np.mean(sparse.losses[:5])
    items = lake.latest_snapshot("items")
    assert items is not None
    save(sparse, tmp_path / "sparse")
    assert load(tmp_path / "sparse", items).model.config.sparse


def test_max_steps_bounds_a_run(lake: Lake) -> None:
    bounded = train(lake, TrainConfig(**{**CONFIG.__dict__, "max_steps": 7}), progress=lambda message: None)
    assert len(bounded.losses) == 7
