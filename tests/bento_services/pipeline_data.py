"""A tiny world for the serving tests: synthetic data in every store and a candidate artifact.

The item index is built from hand-made vectors (items of a category point the same way) instead of
a trained two-tower model, so the fixture takes a second and the right answers are known.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ingestion.generic import GenericSource
from ingestion.importer import Importer
from ingestion.synthetic import SyntheticConfig, generate
from recsys.backends import open_catalog, open_interactions, open_lake, open_user_vectors
from recsys.models.item_index import ItemIndex
from recsys.settings import Settings

VERSION = "v-test"
DIM = 8
COLD_USER = "newcomer"


@dataclass(frozen=True)
class World:
    settings: Settings
    folder: Path  # models/<version>
    items: pd.DataFrame
    events: pd.DataFrame
    warm_user: str  # has history and a vector
    cold_user: str  # in the catalog, no history, preferred categories set


def build_world(settings: Settings, tmp_path: Path, users: int = 30, items: int = 80,
                start: pd.Timestamp | None = None, interactions: int = 2_500) -> World:
    """`start`: the first day of events (default the generator's own, 2026-01-01)."""
    raw = tmp_path / "synthetic"
    config = SyntheticConfig(users=users, items=items, interactions=interactions, days=10, categories=4, seed=3)
    generate(config if start is None else replace(config, start=start), raw, show_progress=False)
    source = GenericSource(raw)
    with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
        catalog.migrate()
        interactions.migrate()
        Importer(catalog, interactions, open_lake(settings)).run(source)
        catalog_items = source.items()
        assert catalog_items is not None
        first = str(catalog_items["category"].iloc[0])
        catalog.write(users=pd.DataFrame({"user_id": [COLD_USER], "preferred_categories": [[first]]}))
    lake = open_lake(settings)
    events = lake.interactions(columns=["user_id", "item_id", "event_time"]).to_pandas().sort_values("event_time")
    folder = settings.data_path / "models" / VERSION
    vectors = category_vectors(catalog_items)
    ids = [str(i) for i in catalog_items["item_id"]]
    ItemIndex.build(vectors, ids, model_version=VERSION, data_start=datetime(2024, 1, 1, tzinfo=UTC),
                    data_end=datetime(2024, 2, 1, tzinfo=UTC), version=VERSION).save(folder / "item_index")
    (settings.data_path / "models" / "CURRENT").write_text(VERSION)
    by_id = dict(zip(ids, vectors))
    histories = events.groupby("user_id")["item_id"].agg(list)
    user_ids = [str(u) for u in histories.index]
    matrix = np.array([_unit(np.mean([by_id[i] for i in h], axis=0)) for h in histories], dtype=np.float32)
    with open_user_vectors(settings) as store:
        store.put(user_ids, matrix, VERSION, datetime.now(UTC))
    warm = str(events["user_id"].value_counts().index[0])
    return World(settings, folder, catalog_items, events, warm, COLD_USER)


def new_version(world: World, name: str) -> None:
    """models/<name>: the world's items on other vectors, with the version's own user vectors."""
    from bento_services.pipeline.deployments import USER_VECTORS

    items = world.items
    vectors = -category_vectors(items)
    folder = world.settings.data_path / "models" / name
    ItemIndex.build(vectors, list(items["item_id"].astype(str)), model_version=name,
                    data_start=datetime(2024, 1, 1, tzinfo=UTC), data_end=datetime(2024, 3, 1, tzinfo=UTC),
                    version=name).save(folder / "item_index")
    users = sorted(str(u) for u in world.events["user_id"].unique())
    np.savez(folder / USER_VECTORS, users=np.array(users, dtype=str),
             vectors=np.tile(vectors[:1], (len(users), 1)), data_end=np.array("2024-03-01T00:00:00+00:00"))


def category_vectors(items: pd.DataFrame) -> np.ndarray:
    rng = np.random.default_rng(0)
    codes = {c: k for k, c in enumerate(sorted(items["category"].astype(str).unique()))}
    rows = [np.eye(DIM)[codes[str(c)] % DIM] + 0.2 * rng.standard_normal(DIM) for c in items["category"]]
    return np.array([_unit(r) for r in rows], dtype=np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def with_features(world: World, tmp_path: Path, day: datetime | None = None) -> Settings:
    """Settings with a fresh copy of feature_repo/ applied (own Feast project), feature tables for every
    user and item of the world dated `day` (default: a day ago, fresh), materialized into the online store.

    A `day` older than the views' TTL (T0, in 2024) gives a world whose stored features are all stale.
    """

    from ingestion.features.materialize import materialize
    from recsys.features.store import apply_repo, open_feature_store
    from tests.conftest import own_feature_repo
    from tests.features.tables import item_rows, user_rows, write_empty_extras, write_table

    day = day or datetime.now(UTC) - timedelta(days=1)
    settings = own_feature_repo(world.settings, tmp_path)
    users = [str(u) for u in world.events["user_id"].unique()]
    write_table(settings, "user_features", [user_rows(u, day, created_timestamp=day) for u in users])
    write_table(settings, "item_features", [item_rows(str(i), day, category=str(c), created_timestamp=day)
                                            for i, c in zip(world.items["item_id"], world.items["category"])])
    write_empty_extras(settings)
    apply_repo(settings)
    materialize(open_feature_store(settings), end=day + timedelta(seconds=1))
    return settings


class FakeRanker:
    """A `Ranker` that scores by the embedding score, or fails the way a test asks."""

    def __init__(self, version: str = "fake-ranker-1", fail: str | None = None, delay_seconds: float = 0.0) -> None:
        self.version, self.fail, self.delay_seconds = version, fail, delay_seconds
        self.calls = 0
        self.feature_columns: list[str] = []

    def score(self, features: dict[str, list[object]], candidate_scores: np.ndarray,
              embedding_scores: np.ndarray) -> np.ndarray:
        import time

        self.calls += 1
        self.feature_columns = list(features)
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        if self.fail == "raise":
            raise RuntimeError("ranker exploded")
        return np.asarray(embedding_scores, dtype=np.float64) + 0.01 * candidate_scores


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateServer:
    """A private Redis or PostgreSQL started by the project's own script on a free port (never the shared one)."""

    def __init__(self, name: str, port_key: str) -> None:
        import tempfile

        from recsys.settings import ROOT_DIR

        (ROOT_DIR / "var").mkdir(exist_ok=True)
        # Under the project's var/ (PostgreSQL runs as its own OS user and must reach the folder).
        self.var_dir = Path(tempfile.mkdtemp(prefix=f"serving-{name}-", dir=ROOT_DIR / "var"))
        self.var_dir.chmod(0o755)
        self.name, self.port_key, self.port = name, port_key, free_port()
        self.script = ROOT_DIR / "infra" / f"{name}.sh"

    def _run(self, action: str) -> None:
        import os
        import subprocess

        env = {**os.environ, "RECSYS_VAR_DIR": str(self.var_dir), self.port_key: str(self.port)}
        result = subprocess.run(["bash", str(self.script), action], env=env, capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}.sh {action} failed: {result.stderr[-2000:]}")

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def remove(self) -> None:
        import shutil

        try:
            self.stop()
        finally:
            shutil.rmtree(self.var_dir, ignore_errors=True)
