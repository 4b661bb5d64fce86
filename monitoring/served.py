"""What is served, measured: the evaluation split replayed through the serving pipeline itself.

`ServedPipeline` is a `Recommender` for the evaluation table whose lists come from
`bento_services.pipeline.pipeline.RecommendationPipeline.recommend`, the code `recommend-batch`,
`precompute` and the API run (post-processing and the degradation ladder included), at the moment of
the split. `fit(train)` builds a world of its own in a work folder that holds only the training part:
each user's raw events before their split time imported into a lake, catalog and interaction store;
the Spark feature job over that lake, `feast apply` and materialization of every entity's newest row up
to its end, so each user's online row is their state at their split; the candidate artifact (two-tower,
FAISS index, neighbours, user vectors) built from it. `recommend` asks the pipeline for each user at
their own request time (one second after their last training event), with the ranker the table's ranked
row trained.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from bento_services.pipeline.batch import batch_settings
from bento_services.pipeline.contracts import RecommendationRequest
from bento_services.pipeline.pipeline import RecommendationPipeline, build_pipeline
from embeddings.artifacts import build_candidate_artifacts
from embeddings.train import TrainConfig
from ingestion.features.engineering import FeatureJobConfig, run_feature_job
from ingestion.features.materialize import materialize
from ingestion.importer import Importer
from ingestion.sources import Chunk, Source
from ingestion.validation import DataFile
from recsys.backends import open_catalog, open_interactions, open_lake
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import Settings
from training.ranker_data import request_times
from training.ranker_eval import RankedCandidates
from training.recommender import Recommender
from training.table import TableModels

NAME = "served pipeline (final lists)"


class FrameSource(Source):
    """Events and items already in the lake's canonical columns, as an import source."""

    name = "the training part"

    def __init__(self, events: pd.DataFrame, items: pd.DataFrame) -> None:
        self._events, self._items = events.reset_index(drop=True), items

    def items(self) -> pd.DataFrame | None:
        return self._items

    def users(self) -> pd.DataFrame | None:
        return None

    def interaction_chunks(self) -> Iterator[Chunk]:
        yield Chunk(DataFile(Path("training-part"), ()), self._events)

    def size_hint(self) -> int | None:
        return len(self._events)


class ServedPipeline:
    """The serving pipeline as a `Recommender`; the ranker comes from the table's `RankedCandidates` row."""

    name = NAME

    def __init__(self, settings: Settings, workdir: Path, config: TrainConfig,
                 ranked: RankedCandidates | None = None, progress: Callable[[str], None] = print) -> None:
        self.settings, self.workdir, self.config, self.ranked, self.progress = (
            settings, workdir, config, ranked, progress)
        self.pipeline: RecommendationPipeline | None = None
        self.world: Settings | None = None  # the training part's own settings (data dir, feature repo)
        self.request_at: dict[str, pd.Timestamp] = {}
        self.degradations: dict[str, int] = {}  # answers by rung in the last `recommend`

    def fit(self, train: pd.DataFrame) -> None:
        """Build the world of the training part (see the module docstring) and open the pipeline on it."""
        self.close()
        self.request_at = request_times(train)
        world = self.world = self._world_settings()
        lake = open_lake(self.settings)
        items = lake.latest_snapshot("items")
        events = lake.interactions().to_pandas()
        cut = events["user_id"].astype(str).map(self.request_at)
        universe = set(train["item_id"].astype(str))  # what every row of the table recommends from
        before = events[cut.notna() & (events["event_time"] < cut) & events["item_id"].astype(str).isin(universe)]
        if items is not None:
            items = items[items["item_id"].astype(str).isin(universe)]
        self.progress(f"served world: {len(before):,} of {len(events):,} events, before each user's split")
        with open_catalog(world) as catalog, open_interactions(world) as interactions:
            catalog.migrate()
            interactions.migrate()
            Importer(catalog, interactions, open_lake(world), show_progress=False).run(
                FrameSource(before, items if items is not None else pd.DataFrame()))
        end = pd.Timestamp(before["event_time"].max()).to_pydatetime() + timedelta(seconds=1)
        run_feature_job(FeatureJobConfig(lake=world.lake_path, output=world.feature_data_path),
                        progress=lambda m: self.progress(f"served world: {m}"))
        apply_repo(world)
        # Every entity's newest row, however old: users are asked at their own split times, years apart, and
        # the read path judges each row's age against the request time (as training's point-in-time join does).
        materialize(open_feature_store(world), end=end, start=datetime(1970, 1, 1, tzinfo=UTC))
        build_candidate_artifacts(world, replace(self.config, until=None),
                                  progress=lambda m: self.progress(f"served world: {m}"))
        ranker = self.ranked.ranker if self.ranked is not None and self.ranked.trained is not None else None
        self.pipeline = build_pipeline(batch_settings(world), ranker=ranker)

    def _world_settings(self) -> Settings:
        folder = self.workdir / f"served-{uuid.uuid4().hex[:8]}"
        repo = folder / "feature_repo"
        shutil.copytree(self.settings.features.repo_path, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
        features = self.settings.features.model_copy(update={"repo_path": repo,
                                                             "project": f"served{uuid.uuid4().hex[:8]}"})
        return self.settings.model_copy(update={"profile": "local", "data_dir": folder / "data",
                                                "features": features})

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        """Each user's served list (up to `k`), asked at their request time, the precomputed layer skipped."""
        assert self.pipeline is not None, "fit first"
        fallback = max(self.request_at.values())
        out: dict[str, list[str]] = {}
        self.degradations = {}
        for user in users:
            at = self.request_at.get(user, fallback).to_pydatetime()
            answer = self.pipeline.recommend(RecommendationRequest(user, n=k, at=at), use_precomputed=False)
            out[user] = [item.item_id for item in answer.items]
            level = answer.degradation.value
            self.degradations[level] = self.degradations.get(level, 0) + 1
        self.progress(f"served answers by rung: {self.degradations}")
        return out

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None


def with_served(models: TableModels, settings: Settings, workdir: Path, config: TrainConfig,
                progress: Callable[[str], None] = print) -> Callable[[int], list[Recommender]]:
    """`models(seed)` and, last (after the ranked row it takes the ranker of), the served pipeline."""
    def factory(seed: int) -> list[Recommender]:
        table = list(models(seed))
        return [*table, ServedPipeline(settings, workdir, replace(config, seed=config.seed + seed),
                                       models.ranked.get(seed), progress)]
    return factory
