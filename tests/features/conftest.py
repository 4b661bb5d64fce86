"""A throwaway copy of feature_repo/ per test, with its own Feast project."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from recsys.settings import ROOT_DIR, Settings


@pytest.fixture
def feature_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose feature repository is a fresh copy, with its own Feast project."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(ROOT_DIR / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    features = settings.features.model_copy(update={"repo_path": repo, "project": f"t{uuid.uuid4().hex[:10]}"})
    return settings.model_copy(update={"features": features})

