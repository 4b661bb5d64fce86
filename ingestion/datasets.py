"""The demo dataset: ml-latest-small in the git-ignored data cache, checked against SHA-256 sums.

Copied from the shared data folder when it exists, otherwise downloaded from GroupLens. Either way
every file is checked against the sums kept in this package, and the dataset's README.txt
(its licence) stays beside the data.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path

from recsys.errors import ChecksumError, InvalidInputError

ARCHIVE_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"


def expected_sums() -> dict[str, str]:
    text = resources.files("ingestion.checksums").joinpath("ml-latest-small.sha256").read_text()
    return {name: digest for digest, name in (line.split() for line in text.splitlines() if line.strip())}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(directory: Path) -> None:
    """Raise ChecksumError naming the first file that is missing or differs."""
    for name, digest in expected_sums().items():
        path = directory / name
        if not path.exists():
            raise ChecksumError(f"{path}: missing from the dataset")
        actual = sha256(path)
        if actual != digest:
            raise ChecksumError(f"{path}: SHA-256 {actual} does not match the recorded {digest}")


def ensure_movielens(dest: Path, shared_dir: Path | None) -> str:
    """Make sure a verified copy is at ``dest``; return where it came from."""
    if all((dest / name).exists() for name in expected_sums()):
        verify(dest)
        return "cache"
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shared = shared_dir / "ml-latest-small" if shared_dir is not None else None
    if shared is not None and shared.is_dir():
        for name in expected_sums():
            shutil.copy2(shared / name, staging / name)
        origin = str(shared)
    else:
        _download(staging)
        origin = ARCHIVE_URL
    verify(staging)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return origin


def _download(staging: Path) -> None:
    try:
        with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as response:
            archive = zipfile.ZipFile(io.BytesIO(response.read()))
    except OSError as exc:
        raise InvalidInputError(f"could not download {ARCHIVE_URL}: {exc}") from exc
    for name in expected_sums():
        with archive.open(f"ml-latest-small/{name}") as source, open(staging / name, "wb") as target:
            shutil.copyfileobj(source, target)
