"""The item index artifact for candidate generation: FAISS over item embeddings, inner product, id mapping.

Building is separate from querying: ``ItemIndex.build`` trains and fills an index from item vectors,
``save``/``load`` move it as a self-describing folder (``index.faiss``, ``item_ids.parquet``, ``meta.json``),
and ``search`` answers top-k queries with item ids and inner-product scores. Small catalogs get an exact
flat index (IVF training on a few thousand points is pointless and unstable); larger ones get IVF-Flat,
or IVF-PQ when memory matters more than exact scores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.errors import InvalidInputError, RecsysError

KINDS = ("auto", "flat", "ivf_flat", "ivf_pq")
FLAT_BELOW = 10_000  # "auto" builds an exact index below this many items
MIN_POINTS_PER_LIST = 39  # FAISS warns that k-means is unreliable with fewer training points per centroid
TRAIN_POINTS_PER_LIST = 128  # k-means sample size per list; FAISS's own cap is 256
PQ_MIN_TRAIN = 256 * MIN_POINTS_PER_LIST  # 8-bit PQ has 256 centroids per sub-quantizer
CHECK_ROWS = 100_000  # non-finite check in chunks, so 10M vectors do not need a 10M boolean mask
FILES = ("index.faiss", "item_ids.parquet", "meta.json")


class IndexInputError(InvalidInputError):
    """Vectors, item ids, queries or build options are wrong; nothing was built or written."""


class IndexArtifactError(RecsysError):
    """A saved index folder is missing a file, unreadable, or its parts disagree; rebuild or re-copy it."""

    http_status = 500


@dataclass(frozen=True)
class IndexMeta:
    """What the artifact is and where it came from, saved beside it as ``meta.json``."""

    version: str
    dim: int
    metric: str
    kind: str
    nlist: int
    item_count: int
    model_version: str
    data_start: str
    data_end: str
    created_at: str


class ItemIndex:
    """Top-k inner-product search over item embeddings that answers in item ids.

    Items placed after the build (`with_items`: a new item's content vector) live in a small exact index
    beside the built one, which is never modified: searches merge both.
    """

    def __init__(self, index: faiss.Index, item_ids: Sequence[str], meta: IndexMeta) -> None:
        self._index = index
        self._item_ids = list(item_ids)
        self.meta = meta
        self._added: faiss.IndexFlatIP | None = None  # the items placed after the build, exact
        self._added_ids: list[str] = []
        self._added_vectors = np.zeros((0, meta.dim), dtype=np.float32)
        self._positions: dict[str, int] | None = None  # built id -> row, made on the first with_items

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying FAISS index (the built items, not those `with_items` placed), for benchmarks and
        diagnostics; do not add to it."""
        return self._index

    @property
    def item_ids(self) -> list[str]:
        """The built items, then the ones `with_items` placed, in the order they were placed."""
        return self._item_ids + self._added_ids

    @property
    def added_ids(self) -> list[str]:
        """The items `with_items` placed beside the built index."""
        return list(self._added_ids)

    def __len__(self) -> int:
        return len(self._item_ids) + len(self._added_ids)

    def with_items(self, vectors: np.ndarray, item_ids: Sequence[str]) -> ItemIndex:
        """A new index that also answers with these items; this one is untouched (copy-on-write: requests
        may be searching it). The built FAISS index is shared, not copied: the placed items go to a small
        exact index beside it, rebuilt here, so the cost grows with the items placed since the build, not
        with the catalog (cloning a 1M-item index and adding takes about a second and its memory twice).
        Ids the index already holds are refused (IndexInputError)."""
        matrix = _as_matrix(vectors, "vectors")
        ids = [str(item) for item in item_ids]
        if len(ids) != len(matrix):
            raise IndexInputError(f"{len(ids)} item ids for {len(matrix)} vectors; they must pair up row by row")
        if matrix.shape[1] != self.meta.dim:
            raise IndexInputError(f"vectors have dimension {matrix.shape[1]}, the index has {self.meta.dim}")
        _check_finite(matrix, "vectors")
        held = set(self._added_ids) | set(ids)
        if len(held) != len(self._added_ids) + len(ids) or any(i in self._lookup() for i in ids):
            raise IndexInputError("with_items places new items only: an id is already in the index or repeated")
        result = ItemIndex(self._index, self._item_ids, self.meta)
        result._positions = self._lookup()  # shared: the built ids never change
        result._added_ids = self._added_ids + ids
        result._added_vectors = np.vstack([self._added_vectors, matrix])
        result._added = faiss.IndexFlatIP(self.meta.dim)
        result._added.add(result._added_vectors)
        return result

    def _lookup(self) -> dict[str, int]:
        """Built id -> row, made once (on the first `with_items`) and shared by the indexes derived from it."""
        if self._positions is None:
            self._positions = {item: row for row, item in enumerate(self._item_ids)}
        return self._positions

    @classmethod
    def build(
        cls, vectors: np.ndarray, item_ids: Sequence[str], *, model_version: str, data_start: datetime,
        data_end: datetime, kind: str = "auto", nlist: int | None = None, pq_bytes: int = 32, seed: int = 0,
        version: str | None = None,
    ) -> ItemIndex:
        """Train (for IVF) and fill an index; row ``i`` of ``vectors`` is the embedding of ``item_ids[i]``."""
        matrix = _as_matrix(vectors, "vectors")
        ids = [str(item) for item in item_ids]
        _check_catalog(matrix, ids)
        if (data_start.tzinfo is None) != (data_end.tzinfo is None):
            raise IndexInputError("data_start and data_end must both carry a time zone, or neither")
        if data_start > data_end:
            raise IndexInputError(f"data_start {data_start.isoformat()} is after data_end {data_end.isoformat()}")
        n, dim = matrix.shape
        kind, nlist_used = _choose_kind(kind, n, nlist)
        index = _make_index(kind, dim, nlist_used, pq_bytes, n, seed)
        if not index.is_trained:
            index.train(_training_sample(matrix, nlist_used, kind, seed))
        index.add(matrix)
        created = datetime.now(UTC)
        meta = IndexMeta(
            version=version or created.strftime("%Y%m%dT%H%M%SZ"), dim=dim, metric="inner_product", kind=kind,
            nlist=nlist_used, item_count=n, model_version=model_version, data_start=data_start.isoformat(),
            data_end=data_end.isoformat(), created_at=created.isoformat(timespec="seconds"),
        )
        return cls(index, ids, meta)

    def search(self, queries: np.ndarray, k: int, nprobe: int = 16) -> list[list[tuple[str, float]]]:
        """Top-``k`` items per query as ``(item_id, inner_product)``, best first; fewer when the index is smaller.

        IVF probes ``nprobe`` lists (more is slower and closer to exact); IVF-PQ scores are approximate.
        """
        matrix = self._queries(np.atleast_2d(queries), k, nprobe)
        built, added, n = self._item_ids, self._added_ids, len(self._item_ids)
        return [[(built[label] if label < n else added[label - n], float(score))
                 for label, score in zip(labels.tolist(), scores.tolist())]
                for labels, scores in self._search_rows(matrix, k, nprobe)]

    def search_rows(self, query: np.ndarray, k: int, nprobe: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """`search` of one query as arrays: rows of `item_ids` (int64) and their inner products (float32), best
        first; no ids are made (the request path maps rows to its own item codes)."""
        return self._search_rows(self._queries(np.asarray(query).reshape(1, -1), k, nprobe), k, nprobe)[0]

    def _queries(self, queries: np.ndarray, k: int, nprobe: int) -> np.ndarray:
        """The queries as a float32 matrix, checked with k and nprobe (IndexInputError)."""
        if k < 1:
            raise IndexInputError(f"k must be at least 1, got {k}")
        if nprobe < 1:
            raise IndexInputError(f"nprobe must be at least 1, got {nprobe}")
        matrix = _as_matrix(queries, "queries")
        if matrix.shape[1] != self.meta.dim:
            raise IndexInputError(f"queries have dimension {matrix.shape[1]}, the index has {self.meta.dim}")
        _check_finite(matrix, "queries")
        return matrix

    def _search_rows(self, matrix: np.ndarray, k: int, nprobe: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query row: the rows of `item_ids` found (the placed items' after the built ones) and scores."""
        k_asked = min(k, len(self._item_ids))
        if isinstance(self._index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = min(nprobe, self._index.nlist)
            scores, labels = self._index.search(matrix, k_asked, params=params)
        else:
            scores, labels = self._index.search(matrix, k_asked)
        # FAISS pads with label -1 when the probed lists hold fewer than k items; those are not results.
        found = [(row_labels[row_labels >= 0].astype(np.int64), row_scores[row_labels >= 0])
                 for row_labels, row_scores in zip(labels, scores)]
        if self._added is None:
            return found
        added_scores, added_labels = self._added.search(matrix, min(k, len(self._added_ids)))
        merged = []
        for (rows, row_scores), labels_, scores_ in zip(found, added_labels, added_scores):
            rows = np.concatenate([rows, labels_[labels_ >= 0].astype(np.int64) + len(self._item_ids)])
            row_scores = np.concatenate([row_scores, scores_[labels_ >= 0]])
            best = np.argsort(-row_scores, kind="stable")[:k]  # stable: the built items first among equals
            merged.append((rows[best], row_scores[best]))
        return merged

    def save(self, folder: Path) -> None:
        """Write the artifact folder atomically: readers see the old folder or the complete new one."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        index, meta = self._index, self.meta
        if self._added_ids:  # one artifact holding the placed items too
            index = faiss.clone_index(self._index)
            index.add(self._added_vectors)
            meta = replace(meta, item_count=len(self))
        try:
            faiss.write_index(index, str(staging / "index.faiss"))
            pq.write_table(pa.table({"item_id": pa.array(self.item_ids, pa.string())}), staging / "item_ids.parquet")
            (staging / "meta.json").write_text(json.dumps(asdict(meta), indent=2) + "\n")
            _swap_in(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> ItemIndex:
        """Read an artifact folder and check that its index, ids and meta describe the same items."""
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise IndexArtifactError(f"index folder {folder} lacks {', '.join(missing)}")
        meta = _read_meta(folder / "meta.json")
        try:
            index = faiss.read_index(str(folder / "index.faiss"))
            ids = pq.read_table(folder / "item_ids.parquet").column("item_id").to_pylist()
        except (RuntimeError, OSError, KeyError, pa.ArrowException) as error:
            raise IndexArtifactError(f"index folder {folder} is unreadable: {error}") from error
        problems = []
        if index.d != meta.dim:
            problems.append(f"index dimension {index.d} != meta dim {meta.dim}")
        if not index.ntotal == len(ids) == meta.item_count:
            problems.append(f"index holds {index.ntotal} vectors, item_ids {len(ids)}, meta item_count "
                            f"{meta.item_count}")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT or meta.metric != "inner_product":
            problems.append("metric is not inner product")
        if len(set(ids)) != len(ids):
            problems.append("item_ids has duplicates")
        if problems:
            raise IndexArtifactError(f"index folder {folder} is inconsistent: {'; '.join(problems)}")
        return cls(index, ids, meta)


def _as_matrix(values: Any, what: str) -> np.ndarray:
    """A 2-D, C-contiguous float32 view or copy, which is what FAISS requires."""
    try:
        matrix = np.ascontiguousarray(values, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise IndexInputError(f"{what} must be a numeric array: {error}") from error
    if matrix.ndim != 2 or matrix.shape[1] < 1:
        raise IndexInputError(f"{what} must be a 2-D array (rows, dim), got shape {matrix.shape}")
    return matrix


def _check_finite(matrix: np.ndarray, what: str) -> None:
    for start in range(0, len(matrix), CHECK_ROWS):
        bad = ~np.isfinite(matrix[start:start + CHECK_ROWS]).all(axis=1)
        if bad.any():
            raise IndexInputError(f"{what} row {start + int(np.argmax(bad))} has NaN or infinite values")


def _check_catalog(matrix: np.ndarray, ids: list[str]) -> None:
    if len(matrix) == 0:
        raise IndexInputError("the catalog is empty: no vectors to index")
    if len(ids) != len(matrix):
        raise IndexInputError(f"{len(ids)} item ids for {len(matrix)} vectors; they must pair up row by row")
    if len(set(ids)) != len(ids):
        repeated = [item for item, count in Counter(ids).most_common(3) if count > 1]
        raise IndexInputError(f"item ids must be unique; repeated: {', '.join(repeated)}")
    _check_finite(matrix, "vectors")


def default_nlist(n: int) -> int:
    """About 4*sqrt(n) lists, but never so many that a list gets fewer than 39 training points."""
    return max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_LIST))


def _choose_kind(kind: str, n: int, nlist: int | None) -> tuple[str, int]:
    if kind not in KINDS:
        raise IndexInputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "flat" if n < FLAT_BELOW else "ivf_flat"
    if kind == "flat":
        return kind, 0
    chosen = default_nlist(n) if nlist is None else nlist
    if chosen < 1 or chosen * MIN_POINTS_PER_LIST > n:
        raise IndexInputError(f"nlist {chosen} needs at least {max(chosen, 1) * MIN_POINTS_PER_LIST} items "
                              f"({MIN_POINTS_PER_LIST} per list), the catalog has {n}; use fewer lists or kind 'flat'")
    return kind, chosen


def _make_index(kind: str, dim: int, nlist: int, pq_bytes: int, n: int, seed: int) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    spec = f"IVF{nlist},Flat"
    if kind == "ivf_pq":
        if pq_bytes < 1 or dim % pq_bytes:
            raise IndexInputError(f"pq_bytes {pq_bytes} must divide the dimension {dim}")
        if n < PQ_MIN_TRAIN:
            raise IndexInputError(f"ivf_pq needs at least {PQ_MIN_TRAIN} items to train its codebooks, got {n}")
        spec = f"IVF{nlist},PQ{pq_bytes}x8"
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed  # k-means initialisation, so the same inputs give the same lists
    if kind == "ivf_pq":
        ivf_pq = cast(faiss.IndexIVFPQ, faiss.downcast_index(ivf))
        ivf_pq.pq.cp.seed = seed
        # Polysemous training only serves Hamming pre-filtering, which search does not use, and is slow.
        ivf_pq.do_polysemous_training = False  # type: ignore[attr-defined]  # missing from faiss's stubs
    return index


def _training_sample(matrix: np.ndarray, nlist: int, kind: str, seed: int) -> np.ndarray:
    """A seeded subset: large catalogs train k-means on a sample, so builds are quick and reproducible."""
    size = nlist * TRAIN_POINTS_PER_LIST
    if kind == "ivf_pq":
        size = max(size, PQ_MIN_TRAIN * 4)
    if size >= len(matrix):
        return matrix
    rows = np.sort(np.random.default_rng(seed).choice(len(matrix), size=size, replace=False))
    return matrix[rows]


def _read_meta(path: Path) -> IndexMeta:
    try:
        return IndexMeta(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise IndexArtifactError(f"{path} is not a valid index meta file: {error}") from error


def _swap_in(staging: Path, folder: Path) -> None:
    """Replace ``folder`` by ``staging`` with renames, so a crash never leaves a half-written artifact."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    retired.rmdir()
    os.rename(folder, retired)
    os.rename(staging, folder)
    shutil.rmtree(retired, ignore_errors=True)
