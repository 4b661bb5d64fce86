"""The synthetic generator: exact size, deterministic by seed, power-law popularity, tastes as ground truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ingestion.generic import GenericSource
from ingestion.importer import Importer
from ingestion.synthetic import SyntheticConfig, generate
from recsys.stores import CatalogStore, InteractionStore, Lake

CONFIG = SyntheticConfig(users=600, items=400, interactions=30_000, days=14, seed=3, users_per_block=250)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    assert generate(CONFIG, out, show_progress=False) == CONFIG.interactions
    return out


def test_same_seed_same_data_other_seed_other_data(dataset: Path, tmp_path: Path) -> None:
    generate(CONFIG, tmp_path / "again", show_progress=False)
    generate(SyntheticConfig(**{**CONFIG.__dict__, "seed": 4}), tmp_path / "other", show_progress=False)
    first = pd.read_parquet(dataset / "interactions")
    assert first.equals(pd.read_parquet(tmp_path / "again" / "interactions"))
    assert not first.equals(pd.read_parquet(tmp_path / "other" / "interactions"))
    assert len(list((dataset / "interactions").glob("*.parquet"))) > 1  # written in blocks


def test_shape_of_the_data(dataset: Path) -> None:
    events = pd.read_parquet(dataset / "interactions")
    items = pd.read_parquet(dataset / "items.parquet")
    assert len(events) == CONFIG.interactions and events["event_id"].is_unique
    assert set(events["action_type"]) == {"view", "click", "purchase", "rate"}
    assert events["value"].dropna().between(1, 5).all()
    span = events["timestamp"].max() - events["timestamp"].min()
    assert pd.Timedelta(days=CONFIG.days - 2) < span <= pd.Timedelta(days=CONFIG.days + 1)
    assert items["category"].nunique() > 5 and items["tags"].str.len().gt(0).all()
    # Power law: the top 5% of items draw far more than 5% of the views.
    views = events[events["action_type"] == "view"]["item_id"].value_counts()
    assert views.iloc[: CONFIG.items // 20].sum() / views.sum() > 0.3
    # Sessions: several events each, from one user.
    per_session = events.groupby("session_id")["user_id"].agg(["nunique", "size"])
    assert (per_session["nunique"] == 1).all() and per_session["size"].mean() > 3


def test_users_follow_their_ground_truth_taste(dataset: Path) -> None:
    events = pd.read_parquet(dataset / "interactions")
    items = pd.read_parquet(dataset / "items.parquet").set_index("item_id")
    truth = pd.read_parquet(dataset / "ground_truth" / "user_tastes.parquet").set_index("user_id")
    views = events[events["action_type"] == "view"]
    views = views.assign(category=items.loc[views["item_id"], "category"].to_numpy())
    active = views["user_id"].value_counts().loc[lambda c: c >= 30].index
    top = views[views["user_id"].isin(active)].groupby("user_id")["category"].agg(lambda c: c.mode().iloc[0])
    agreement = (top == truth.loc[top.index, "favourite_category"]).mean()
    assert agreement > 0.6


def test_the_output_imports_as_the_generic_format(
    dataset: Path, catalog: CatalogStore, interactions: InteractionStore, lake: Lake
) -> None:
    Importer(catalog, interactions, lake, show_progress=False).run(GenericSource(dataset))
    assert lake.count_interactions() == CONFIG.interactions
    assert interactions.counts()["interactions"] == CONFIG.interactions
    assert catalog.counts()["items"] == CONFIG.items
