"""The feature repository from a fresh clone: `feast plan` / `feast apply` as they are, then the
whole path (import, Spark, apply, materialize) serves a value known from the raw data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from ingestion.features.engineering import FeatureJobConfig, run_feature_job
from ingestion.features.materialize import materialize
from ingestion.importer import Importer
from ingestion.movielens import MovieLensSource
from recsys.features.online import FastOnlineFeatures
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import ROOT_DIR, Settings
from recsys.stores import Lake

FEAST = str(Path(sys.executable).with_name("feast"))


def test_feast_plan_and_apply_work_as_they_are(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    shutil.copytree(ROOT_DIR / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    plan = subprocess.run([FEAST, "plan"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-2000:]
    apply = subprocess.run([FEAST, "apply"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert apply.returncode == 0, apply.stderr[-2000:]
    for name in ("ranker_v1", "ranker_v2", "candidates_v1", "realtime_v1"):
        assert f"feature service {name}" in apply.stdout
    listed = subprocess.run([FEAST, "feature-services", "list"], cwd=repo, capture_output=True, text=True)
    assert "ranker_v1" in listed.stdout


@pytest.fixture(scope="module")
def movielens_features(movielens_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Lake]:
    """ml-latest-small imported into a lake, and the Spark job's tables built from it (once)."""
    root = tmp_path_factory.mktemp("ml-features")
    lake = Lake(root / "lake")
    from recsys.stores.catalog_sqlite import SqliteCatalogStore
    from recsys.stores.interactions_sqlite import SqliteInteractionStore

    catalog, interactions = SqliteCatalogStore(root / "c.sqlite"), SqliteInteractionStore(root / "i.sqlite")
    catalog.migrate()
    interactions.migrate()
    Importer(catalog, interactions, lake, show_progress=False).run(MovieLensSource(movielens_dir))
    run_feature_job(FeatureJobConfig(lake=lake.root, output=root / "features"), progress=lambda m: None)
    return root / "features", lake


def test_materialized_values_match_the_raw_data(
    feature_settings: Settings, movielens_features: tuple[Path, Lake]
) -> None:
    tables, lake = movielens_features
    shutil.copytree(tables, feature_settings.feature_data_path)
    apply_repo(feature_settings)
    newest = pd.read_parquet(tables / "user_features", columns=["user_id", "event_timestamp"]).sort_values(
        "event_timestamp").iloc[-1]
    user, as_of = str(newest["user_id"]), newest["event_timestamp"].to_pydatetime()
    materialize(open_feature_store(feature_settings), end=as_of)

    events = lake.interactions().to_pandas()
    mine = events[(events["user_id"] == user) & (events["event_time"] < as_of)]
    rated = events[(events["item_id"] == "318") & (events["action_type"] == "rate") & (events["event_time"] < as_of)]
    store = open_feature_store(feature_settings)
    served = store.get_online_features(
        features=["user_features:interactions_total", "user_features:rates_total", "item_features:rating_count",
                  "item_features:avg_rating"],
        entity_rows=[{"user_id": user, "item_id": "318"}], full_feature_names=True,
    ).to_dict()
    assert served["user_features__interactions_total"] == [len(mine)]
    assert served["user_features__rates_total"] == [int((mine["action_type"] == "rate").sum())]
    assert served["item_features__rating_count"] == [len(rated)]
    assert served["item_features__avg_rating"][0] == pytest.approx(rated["value"].mean())

    fast = FastOnlineFeatures(store, "ranker_v2")
    request = {"request_time": as_of + timedelta(hours=1), "device": "tv"}
    values, status = fast.get(user, ["318", "1", "no-such-movie"], request)
    feast_values = store.get_online_features(
        features=store.get_feature_service("ranker_v2"), full_feature_names=True,
        entity_rows=[{"user_id": user, "item_id": i, **request} for i in ["318", "1", "no-such-movie"]],
    ).to_dict()
    assert values == feast_values
    assert status["item_features__avg_rating"][2] == "missing"


def test_feast_materialize_incremental_works_on_the_repo_after_the_pipeline(
    feature_settings: Settings, movielens_features: tuple[Path, Lake]
) -> None:
    """What a data scientist runs in feature_repo/ after `make features`: Feast's own materialization,
    including the views whose batch source nothing has written yet (the real-time view's history)."""
    tables, _ = movielens_features
    shutil.copytree(tables, feature_settings.feature_data_path)
    apply_repo(feature_settings)
    repo = feature_settings.features.repo_path
    assert any((repo / "data" / "features" / "user_realtime").glob("*.parquet"))
    apply = subprocess.run([FEAST, "apply"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert apply.returncode == 0, apply.stderr[-2000:]
    end = pd.read_parquet(tables / "user_features", columns=["event_timestamp"])["event_timestamp"].max()
    until = (end + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    # Incremental starts at now - ttl on a first run (nothing of 2018 falls in it), but must not fail.
    run = subprocess.run([FEAST, "materialize-incremental", until], cwd=repo, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "user_realtime" in run.stdout and "item_features" in run.stdout
    # The explicit window loads the history, the empty real-time table included.
    run = subprocess.run([FEAST, "materialize", "2000-01-01T00:00:00", until], cwd=repo, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    newest = pd.read_parquet(tables / "user_features", columns=["user_id", "event_timestamp",
                                                                "interactions_total"])
    newest = newest[newest["event_timestamp"] == end].iloc[0]
    from feast import FeatureStore

    served = FeatureStore(repo_path=str(repo)).get_online_features(
        features=["user_features:interactions_total"], entity_rows=[{"user_id": newest["user_id"]}]).to_dict()
    assert served["interactions_total"] == [newest["interactions_total"]]
