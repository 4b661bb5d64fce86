"""Opening the Feast feature store for a profile.

`feature_repo/feature_store.yaml` is the `local` profile as is (SQLite online store); the
`services` profile uses `infra/feast/feature_store.yaml` (Redis online store, Spark batch engine);
`recsys.backends.feature_store_yaml` picks one. Addresses and the project name come from the
settings, so one repository serves both.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from feast import FeatureStore, FileSource
from feast.repo_config import RepoConfig

from recsys.backends import feature_store_yaml
from recsys.private.feast import feast_value_type_to_pa
from recsys.settings import Settings


def repo_config(settings: Settings) -> RepoConfig:
    repo = settings.features.repo_path
    raw: dict[str, Any] = yaml.safe_load(feature_store_yaml(settings).read_text())
    raw["project"] = settings.features.project
    if isinstance(raw.get("online_store"), dict) and raw["online_store"].get("type") == "redis":
        redis = settings.redis
        raw["online_store"]["connection_string"] = f"{redis.host}:{redis.port},db={redis.db}"
    if isinstance(raw.get("batch_engine"), dict):
        raw["batch_engine"].setdefault("spark_conf", {})["spark.master"] = settings.features.spark_master
    config = RepoConfig(**raw)
    config.repo_path = repo
    return config


def open_feature_store(settings: Settings) -> FeatureStore:
    return FeatureStore(repo_path=str(settings.features.repo_path), config=repo_config(settings))


def registered(settings: Settings, data_source: str) -> bool:
    """Whether the applied registry has `data_source` (False when nothing was applied yet)."""
    try:
        open_feature_store(settings).get_data_source(data_source)
    except Exception:  # noqa: BLE001 - no registry, or a registry without it
        return False
    return True


@contextmanager
def inside_repo(repo_path: Path | str) -> Iterator[None]:
    """Run with the feature repository as working directory and import path.

    Feast imports the repository's files as top-level modules named after their paths from the
    working directory, and its DuckDB offline store reads relative source paths from there too.
    """
    repo, here = str(repo_path), os.getcwd()
    os.chdir(repo)
    sys.path.insert(0, repo)
    try:
        yield
    finally:
        sys.path.remove(repo)
        os.chdir(here)


def apply_repo(settings: Settings) -> None:
    """`feast apply` for the profile: register the definitions, create the online tables, and give every
    view's batch source a table (empty where nothing was written yet), so that Feast's own
    `feast materialize-incremental` works on the repository as it is."""
    from feast.repo_operations import apply_total

    with inside_repo(settings.features.repo_path):
        apply_total(repo_config(settings), settings.features.repo_path, skip_source_validation=True)
    ensure_batch_sources(open_feature_store(settings))


def ensure_batch_sources(store: FeatureStore) -> list[Path]:
    """Write an empty Parquet file, with the view's columns, for each file source that has no data yet."""
    created = []
    for view in store.list_feature_views():
        source = view.batch_source
        if not isinstance(source, FileSource):
            continue
        folder = Path(source.path)
        folder = folder if folder.is_absolute() else Path(store.repo_path) / folder
        if folder.exists() and any(folder.rglob("*.parquet")):
            continue
        fields = [*view.entity_columns, *view.features]
        columns = [pa.field(f.name, feast_value_type_to_pa(f.dtype.to_value_type())) for f in fields]
        stamps = [source.timestamp_field, source.created_timestamp_column]
        columns += [pa.field(name, pa.timestamp("us", tz="UTC")) for name in stamps if name]
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.schema(columns).empty_table(), folder / "empty.parquet")
        created.append(folder)
    return created
