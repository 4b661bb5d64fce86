"""A 1,000,000-item synthetic serving world, built through the real formats so the served code path is the real one.

Training a two-tower model on a million items is too slow on two cores, so only the embeddings are made up:
clustered random 128-d unit vectors (one centre per category, items of a category around it). Everything
else is the platform's own path: the synthetic generator writes the dataset, the importer loads the catalog,
the interaction store and the lake, `ItemIndex.build` trains and saves the IVF index under
`models/<version>/item_index` (the candidate artifact the service loads), user vectors (the mean of each
user's items) go to the user-vector store, and `recsys precompute` fills the precomputed layer for the users
active in the last day (the first 300 of them).

    .venv/bin/python -m bench.serving_world        # builds var/bench/serving-1m once
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import CACHE, synthetic
from ingestion.generic import GenericSource
from ingestion.importer import Importer
from ingestion.synthetic import SyntheticConfig
from recsys.backends import open_catalog, open_interactions, open_lake, open_user_vectors
from recsys.models.item_index import ItemIndex
from recsys.settings import Settings

CONFIG = SyntheticConfig(users=20_000, items=1_000_000, interactions=1_000_000, days=30, categories=50)
DIM = 128
VERSION = "synthetic-1m"
PRECOMPUTED_USERS = 300


def _step(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)


def item_vectors(categories: pd.Series, seed: int = 0) -> np.ndarray:
    """Unit vectors clustered by category: centre + noise, so nearest neighbours share a category."""
    rng = np.random.default_rng(seed)
    codes, uniques = pd.factorize(categories.astype(str))
    centres = rng.standard_normal((len(uniques), DIM)).astype(np.float32)
    vectors = centres[codes] + 0.6 * rng.standard_normal((len(codes), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def million_world() -> Path:
    folder = CACHE / "serving-1m"
    if not (folder / ".built").exists():
        _build(folder)
    if not (folder / ".complete").exists():
        precompute_some(folder)
    return folder


def _build(folder: Path) -> None:
    started = time.perf_counter()
    raw = synthetic(CONFIG)
    _step(f"synthetic dataset at {raw}", started)
    settings = Settings.load().model_copy(update={"data_dir": folder, "profile": "local"})
    source = GenericSource(raw)
    with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
        catalog.migrate()
        interactions.migrate()
        Importer(catalog, interactions, open_lake(settings)).run(source)
    _step("imported catalog, interactions and lake", started)
    items = source.items()
    assert items is not None
    ids = [str(i) for i in items["item_id"]]
    vectors = item_vectors(items["category"])
    events = open_lake(settings).interactions(columns=["user_id", "item_id", "event_time"]).to_pandas()
    end = events["event_time"].max().to_pydatetime()
    index = ItemIndex.build(vectors, ids, model_version=VERSION, data_start=end - timedelta(days=CONFIG.days),
                            data_end=end, kind="auto", version=VERSION)
    index.save(folder / "models" / VERSION / "item_index")
    (folder / "models" / "CURRENT").write_text(VERSION)
    _step(f"item index: {len(index)} items, {index.meta.kind}, nlist {index.meta.nlist}", started)
    _user_vectors(settings, events, dict(zip(ids, range(len(ids)))), vectors)
    _step("user vectors", started)
    (folder / ".built").touch()


def recent_users(folder: Path, count: int) -> list[str]:
    """The first `count` users active in the data's last day (`precompute_some` took the first 300)."""
    from bento_services.pipeline.batch import active_users

    settings = Settings.load().model_copy(update={"data_dir": folder, "profile": "local"})
    return active_users(settings, 1)[:count]


def precompute_some(folder: Path, users: int = PRECOMPUTED_USERS) -> None:
    """Precomputed lists for the most recently active `users` (the whole last day would take half an hour)."""
    from bento_services.pipeline.batch import precompute
    from bento_services.pipeline.rankers import build_serving_pipeline

    settings = Settings.load().model_copy(update={"data_dir": folder, "profile": "local"})
    pipeline = build_serving_pipeline(settings)
    try:
        precompute(pipeline, recent_users(folder, users), 100)
    finally:
        pipeline.close()
    (folder / ".complete").touch()


def _user_vectors(settings: Settings, events: pd.DataFrame, row_of: dict[str, int], vectors: np.ndarray) -> None:
    rows = events["item_id"].astype(str).map(row_of)
    frame = pd.DataFrame({"user_id": events["user_id"].astype(str), "row": rows}).dropna()
    users, matrix = [], []
    for user, group in frame.groupby("user_id")["row"]:
        mean = vectors[group.to_numpy(dtype=np.int64)].mean(axis=0)
        users.append(str(user))
        matrix.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    with open_user_vectors(settings) as store:
        store.put(users, np.asarray(matrix, dtype=np.float32), VERSION, datetime.now(UTC))


if __name__ == "__main__":
    print(million_world())
