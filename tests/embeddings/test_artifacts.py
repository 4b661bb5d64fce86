"""Candidate artifacts: one version across checkpoint, index and the user vectors online."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embeddings.artifacts import build_candidate_artifacts
from embeddings.train import TrainConfig, load, user_vectors
from ingestion.generic import GenericSource, load_into_lake
from ingestion.synthetic import SyntheticConfig, generate
from recsys.backends import open_lake, open_user_vectors
from recsys.models.item_index import ItemIndex
from recsys.models.neighbours import load_neighbours
from recsys.settings import Settings


def test_build_publishes_a_consistent_version(settings: Settings, tmp_path: Path) -> None:
    generate(SyntheticConfig(users=80, items=60, interactions=3_000, days=10, categories=4, seed=2),
             tmp_path / "synthetic", show_progress=False)
    lake = open_lake(settings)
    source = GenericSource(tmp_path / "synthetic")
    load_into_lake(source, lake)
    items = source.items()
    assert items is not None

    built = build_candidate_artifacts(settings, TrainConfig(epochs=1, batch_size=128, shuffle_buffer=500),
                                      progress=lambda message: None)
    assert (settings.data_path / "models" / "CURRENT").read_text() == built.version
    index = ItemIndex.load(built.folder / "item_index")
    events = lake.interactions().to_pandas().sort_values("event_time")
    assert index.meta.model_version == built.version and len(index) == 60
    assert built.users == events["user_id"].nunique()
    trained = load(built.folder / "two_tower", items)
    history = events.loc[events["user_id"] == "u3", "item_id"].tolist()[-20:]
    with open_user_vectors(settings) as store:
        (stored,) = store.get(["u3"])
    assert stored is not None and stored.version == built.version
    assert np.allclose(stored.vector, user_vectors(trained, ["u3"], [history])[0], atol=1e-6)
    neighbours = load_neighbours(built.folder)
    assert neighbours is not None and neighbours.meta.model_version == built.version
    assert set(neighbours.item_ids) <= set(items["item_id"]) and neighbours.similar(history, 10)
    assert load_neighbours(tmp_path / "a-version-built-before-neighbours") is None
