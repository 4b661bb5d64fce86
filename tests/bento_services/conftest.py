"""Registers the `slow` marker: tests that build and serve a Bento (a minute or two; they run in CI too)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds or serves a Bento; runs in CI, deselect with -m 'not slow'")
