"""Opening the Feast feature store for a profile.

`feature_repo/feature_store.yaml` is the `local` profile as is (SQLite online store); the
`services` profile uses `infra/feast/feature_store.yaml` (Redis online store, Spark batch engine).
Addresses and the project name come from the settings, so one repository serves both.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from recsys.settings import Settings


def repo_config(settings: Settings) -> RepoConfig:
    repo = settings.features.repo_path
    yaml_file = settings.features.services_yaml if settings.profile == "services" else repo / "feature_store.yaml"
    raw: dict[str, Any] = yaml.safe_load(Path(yaml_file).read_text())
    raw["project"] = settings.features.project
    if settings.profile == "services":
        redis = settings.redis
        raw["online_store"]["connection_string"] = f"{redis.host}:{redis.port},db={redis.db}"
        if isinstance(raw.get("batch_engine"), dict):
            raw["batch_engine"].setdefault("spark_conf", {})["spark.master"] = settings.features.spark_master
    config = RepoConfig(**raw)
    config.repo_path = repo
    return config


def open_feature_store(settings: Settings) -> FeatureStore:
    return FeatureStore(repo_path=str(settings.features.repo_path), config=repo_config(settings))


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
    """`feast apply` for the profile: register the definitions and create the online tables."""
    from feast.repo_operations import apply_total

    with inside_repo(settings.features.repo_path):
        apply_total(repo_config(settings), settings.features.repo_path, skip_source_validation=True)
