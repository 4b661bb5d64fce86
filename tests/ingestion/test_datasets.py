"""The demo dataset cache: copied once, checked against the recorded SHA-256 sums."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingestion.datasets import ensure_movielens, expected_sums, verify
from recsys.errors import ChecksumError


@pytest.fixture
def shared(movielens_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "shared" / "ml-latest-small"
    shutil.copytree(movielens_dir, folder)
    return folder.parent


def test_sums_cover_the_data_and_its_licence() -> None:
    assert set(expected_sums()) == {"links.csv", "movies.csv", "ratings.csv", "tags.csv", "README.txt"}


def test_copies_from_shared_then_uses_the_cache(shared: Path, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "ml-latest-small"
    assert ensure_movielens(dest, shared) == str(shared / "ml-latest-small")
    assert (dest / "README.txt").exists()
    shutil.rmtree(shared)
    assert ensure_movielens(dest, shared) == "cache"


def test_a_tampered_file_is_refused_and_not_cached(shared: Path, tmp_path: Path) -> None:
    with open(shared / "ml-latest-small" / "ratings.csv", "a") as handle:
        handle.write("1,1,5.0,964982703\n")
    dest = tmp_path / "cache" / "ml-latest-small"
    with pytest.raises(ChecksumError, match="ratings.csv: SHA-256"):
        ensure_movielens(dest, shared)
    assert not dest.exists()


def test_a_tampered_cache_is_refused(shared: Path, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "ml-latest-small"
    ensure_movielens(dest, shared)
    (dest / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(ChecksumError, match="movies.csv"):
        verify(dest)
