"""A throwaway copy of feature_repo/ per test, with its own Feast project."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.settings import Settings
from tests.conftest import own_feature_repo


@pytest.fixture
def feature_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose feature repository is a fresh copy, with its own Feast project."""
    return own_feature_repo(settings, tmp_path)

