"""The item index: exact answers on a tiny known catalog, IVF recall against exact, the edge cases
Merlin's bug list names (top-k larger than the index, FAISS's -1 padding), artifacts that describe
themselves and refuse to load when corrupt, and a clear 4xx error for each kind of bad input."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.errors import InvalidInputError
from recsys.models.item_index import IndexArtifactError, IndexInputError, ItemIndex

START, END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 31, tzinfo=UTC)


def build(vectors: Any, ids: Any, **options: Any) -> ItemIndex:
    return ItemIndex.build(vectors, ids, model_version="two_tower@test", data_start=START, data_end=END, **options)


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def catalog() -> tuple[np.ndarray, list[str]]:
    return clustered(20_000, 32, 200, seed=1), [f"item-{i}" for i in range(20_000)]


@pytest.fixture(scope="module")
def ivf(catalog: tuple[np.ndarray, list[str]]) -> ItemIndex:
    return build(*catalog, seed=0)


TINY = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 1, 0], [-1, 0, 0, 0]], dtype=np.float32)
TINY_IDS = ["a", "b", "c", "d", "e"]


def test_flat_gives_exact_inner_products_best_first() -> None:
    index = build(TINY, TINY_IDS)
    assert index.meta.kind == "flat" and index.meta.nlist == 0
    [hits] = index.search(np.array([[1, 0.6, 0, 0]]), k=3)
    assert [item for item, _ in hits] == ["c", "a", "b"]
    assert [score for _, score in hits] == pytest.approx([1.08, 1.0, 0.6])


def test_auto_kind_is_ivf_for_large_catalogs_with_lists_of_at_least_39_points(ivf: ItemIndex) -> None:
    assert ivf.meta.kind == "ivf_flat"
    assert 1 <= ivf.meta.nlist <= 20_000 // 39
    assert ivf.meta.item_count == 20_000 and ivf.meta.dim == 32 and ivf.meta.metric == "inner_product"


def test_ivf_recall_at_50_against_exact(catalog: tuple[np.ndarray, list[str]], ivf: ItemIndex) -> None:
    vectors, ids = catalog
    exact = build(vectors, ids, kind="flat")
    queries = clustered(200, 32, 200, seed=1)[:100] + 0.05
    found = ivf.search(queries, k=50, nprobe=16)
    truth = exact.search(queries, k=50)
    recall = np.mean([len({i for i, _ in f} & {i for i, _ in t}) / 50 for f, t in zip(found, truth)])
    assert recall >= 0.9, recall
    for hits in found:
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True)


def test_same_inputs_and_seed_give_the_same_index(catalog: tuple[np.ndarray, list[str]], ivf: ItemIndex) -> None:
    again = build(*catalog, seed=0)
    queries = catalog[0][:20]
    assert again.search(queries, k=10, nprobe=4) == ivf.search(queries, k=10, nprobe=4)


def test_k_larger_than_the_index_returns_what_exists() -> None:
    index = build(TINY, TINY_IDS)
    [hits] = index.search(np.array([1, 0, 0, 0]), k=100)
    assert sorted(item for item, _ in hits) == sorted(TINY_IDS)


def test_ivf_never_returns_faiss_padding(catalog: tuple[np.ndarray, list[str]], ivf: ItemIndex) -> None:
    # One probed list holds far fewer than k items: FAISS pads its answer with label -1.
    [hits] = ivf.search(catalog[0][0], k=5_000, nprobe=1)
    assert 0 < len(hits) < 5_000
    assert all(item.startswith("item-") for item, _ in hits)
    assert len({item for item, _ in hits}) == len(hits)


def test_save_and_load_round_trip(tmp_path: Path, catalog: tuple[np.ndarray, list[str]], ivf: ItemIndex) -> None:
    folder = tmp_path / "items" / "v1"
    ivf.save(folder)
    ivf.save(folder)  # replacing an existing artifact works and leaves no staging folders
    assert sorted(p.name for p in folder.parent.iterdir()) == ["v1"]
    loaded = ItemIndex.load(folder)
    assert loaded.meta == ivf.meta
    assert loaded.meta.model_version == "two_tower@test" and loaded.meta.data_start == START.isoformat()
    queries = catalog[0][:10]
    assert loaded.search(queries, k=20) == ivf.search(queries, k=20)


def _saved(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    build(TINY, TINY_IDS, version="v7").save(folder)
    return folder


@pytest.mark.parametrize("damage", ["truncated index", "missing ids", "ids count", "meta dim", "meta json"])
def test_corrupt_or_mismatched_artifact_is_refused(tmp_path: Path, damage: str) -> None:
    folder = _saved(tmp_path)
    if damage == "truncated index":
        data = (folder / "index.faiss").read_bytes()
        (folder / "index.faiss").write_bytes(data[: len(data) // 2])
    elif damage == "missing ids":
        (folder / "item_ids.parquet").unlink()
    elif damage == "ids count":
        pq.write_table(pa.table({"item_id": ["a", "b"]}), folder / "item_ids.parquet")
    elif damage == "meta dim":
        meta = (folder / "meta.json").read_text().replace('"dim": 4', '"dim": 8')
        (folder / "meta.json").write_text(meta)
    else:
        (folder / "meta.json").write_text("{not json")
    with pytest.raises(IndexArtifactError, match=str(folder)):
        ItemIndex.load(folder)


def test_ivf_pq_builds_and_searches() -> None:
    vectors = clustered(10_000, 32, 50, seed=2)
    ids = [f"p{i}" for i in range(len(vectors))]
    index = build(vectors, ids, kind="ivf_pq", nlist=64, pq_bytes=4)
    assert index.meta.kind == "ivf_pq" and index.meta.nlist == 64
    results = index.search(vectors[:50], k=10, nprobe=8)
    assert all(len(hits) == 10 for hits in results)
    found_self = np.mean([f"p{i}" in {item for item, _ in hits} for i, hits in enumerate(results)])
    assert found_self >= 0.8  # approximate scores, but an item's own vector still ranks it near the top


BAD_BUILDS: dict[str, tuple[Callable[[], tuple[Any, Any]], dict[str, Any], str]] = {
    "non-finite vector": (lambda: (np.where(np.eye(5, 4) == 1, np.nan, TINY), TINY_IDS), {}, "NaN"),
    "duplicate ids": (lambda: (TINY, ["a", "b", "a", "d", "e"]), {}, "unique"),
    "length mismatch": (lambda: (TINY, TINY_IDS[:4]), {}, "pair up"),
    "empty catalog": (lambda: (np.zeros((0, 4), np.float32), []), {}, "empty"),
    "not a matrix": (lambda: (TINY[0], ["a"]), {}, "2-D"),
    "unknown kind": (lambda: (TINY, TINY_IDS), {"kind": "hnsw"}, "unknown index kind"),
    "too many lists": (lambda: (TINY, TINY_IDS), {"kind": "ivf_flat"}, "39 per list"),
    "pq bytes": (lambda: (clustered(10_000, 30, 5, 0), list(range(10_000))), {"kind": "ivf_pq", "pq_bytes": 8},
                 "divide"),
}


@pytest.mark.parametrize("case", BAD_BUILDS)
def test_bad_build_input_is_a_400(case: str) -> None:
    make, options, message = BAD_BUILDS[case]
    with pytest.raises(IndexInputError, match=message) as raised:
        build(*make(), **options)
    assert isinstance(raised.value, InvalidInputError) and raised.value.http_status == 400


def test_data_window_must_be_ordered() -> None:
    with pytest.raises(IndexInputError, match="after"):
        ItemIndex.build(TINY, TINY_IDS, model_version="m", data_start=END, data_end=START)


@pytest.mark.parametrize(("queries", "k", "message"), [
    (np.ones((1, 3)), 5, "dimension 3"),
    (np.array([[np.inf, 0, 0, 0]]), 5, "NaN or infinite"),
    (np.ones((1, 4)), 0, "k must be at least 1"),
])
def test_bad_queries_are_a_400(queries: np.ndarray, k: int, message: str) -> None:
    index = build(TINY, TINY_IDS)
    with pytest.raises(IndexInputError, match=message):
        index.search(queries, k=k)
