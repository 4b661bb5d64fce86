"""The gate on a small world: a version whose index holds shuffled item vectors is rejected, naming the metric;
a good one passes every check (metrics, popularity, index, latency)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bento_services.pipeline.retrieve import _vectors
from embeddings.artifacts import build_candidate_artifacts
from embeddings.train import TrainConfig
from ingestion.generic import GenericSource
from ingestion.importer import Importer
from ingestion.synthetic import SyntheticConfig, generate
from recsys.backends import open_catalog, open_interactions, open_lake
from recsys.models.item_index import ItemIndex
from recsys.settings import PipelineSettings, Settings
from tests.conftest import make_settings
from workflow.evaluate import day_holdout, held_out_day, measure, popularity
from workflow.gate import index_answers, judge_latency, judge_metrics, latency_probe

K = 20


@dataclass(frozen=True)
class World:
    settings: Settings
    folder: Path  # the version in service: a two-tower model trained on the days before the held-out one
    events: pd.DataFrame


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Synthetic users with concentrated tastes and a flat popularity curve: a model that learned the tastes
    beats popularity there (on the generator's defaults at this size, popularity is hard to beat without a
    ranker)."""
    tmp_path = tmp_path_factory.mktemp("gate")
    settings = make_settings("local", tmp_path)
    generate(SyntheticConfig(users=150, items=150, interactions=8_000, days=8, categories=8, seed=3,
                             zipf_exponent=0.6, taste_concentration=0.1), tmp_path / "raw", show_progress=False)
    with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
        catalog.migrate()
        interactions.migrate()
        Importer(catalog, interactions, open_lake(settings)).run(GenericSource(tmp_path / "raw"))
    events = open_lake(settings).interactions(columns=["user_id", "item_id", "event_time"]).to_pandas()
    start, _ = held_out_day(settings.lake_path, _as_of(events))
    built = build_candidate_artifacts(settings, TrainConfig(epochs=2, batch_size=256, shuffle_buffer=2_000,
                                                            until=start), progress=lambda _: None)
    return World(settings, built.folder, events)


def _as_of(events: pd.DataFrame) -> datetime:
    return (events["event_time"].max() + timedelta(seconds=1)).to_pydatetime()


def _copy(world: World, name: str, shuffle: bool) -> Path:
    """A copy of the world's version; with `shuffle`, its index built from the same vectors dealt to other items."""
    folder = world.settings.data_path / "models" / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(world.folder, folder)
    if shuffle:
        index = ItemIndex.load(world.folder / "item_index")
        vectors = _vectors(index)[np.random.default_rng(1).permutation(len(index.item_ids))]
        window = {k: datetime.fromisoformat(getattr(index.meta, k)) for k in ("data_start", "data_end")}
        ItemIndex.build(vectors, list(index.item_ids), model_version=name, version=name, **window).save(
            folder / "item_index")
    return folder


def _judged(world: World, folder: Path) -> list[str]:
    settings = world.settings
    start, frame = held_out_day(settings.lake_path, _as_of(world.events))
    held = day_holdout(frame, start, users=500)
    serving = measure(settings, world.folder, held, None, K)
    new = measure(settings, folder, held, None, K)
    popular = popularity(frame[frame["event_time"] < pd.Timestamp(start)], held, K)
    return judge_metrics(new, serving, popular, _config(settings))


def _config(settings: Settings) -> PipelineSettings:
    return settings.pipeline.model_copy(update={"k": K})


def test_shuffled_item_vectors_are_rejected_naming_the_metric(world: World) -> None:
    reasons = _judged(world, _copy(world, "shuffled", shuffle=True))
    assert any(r.startswith(f"ann_recall@{K} ") and "below the serving version's" in r for r in reasons), reasons


def test_a_good_version_passes_every_check(world: World) -> None:
    folder = _copy(world, "good", shuffle=False)
    assert _judged(world, folder) == []
    history = world.events.loc[world.events["user_id"] == world.events["user_id"].iloc[0], "item_id"].tolist()
    assert index_answers(world.settings, folder, history) is None
    users = sorted(world.events["user_id"].unique())[:20]
    probe = latency_probe(world.settings, folder, None, users, requests=30)
    assert probe["errors"] == 0 and probe["requests"] == 30
    assert judge_latency(probe, world.settings.pipeline) == []
    too_tight = world.settings.pipeline.model_copy(update={"latency_budget_ms": 1e-3})
    assert judge_latency(probe, too_tight)[0].startswith("latency probe: p99 ")


def test_an_index_that_does_not_load_is_a_reason(world: World) -> None:
    folder = _copy(world, "corrupt", shuffle=False)
    (folder / "item_index" / "index.faiss").write_bytes(b"not an index")
    reason = index_answers(world.settings, folder, ["anything"])
    assert reason is not None and reason.startswith("index: item index unusable")
