"""Embedding drift between the two most recent candidate model versions (`data_dir/models/<version>/`).

Item vectors are read back from each version's FAISS item index (exact for a flat or IVF-Flat index, the
quantized vectors for IVF-PQ) for the items both versions hold. Two trainings of the two-tower model place the
same geometry in arbitrarily rotated bases, so the older version's vectors are first rotated onto the newer's
(orthogonal Procrustes over the shared items: rotation only, norms and inner products kept); what remains is a
change of the geometry itself. Evidently's `EmbeddingsDrift` then compares the aligned older vectors
(reference) with the newer ones (current) by `monitoring.embedding_drift_method`. Beside it, the share of each
sampled item's ten nearest neighbours that both versions agree on, a rotation-free reading of the same thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from evidently import DataDefinition
from evidently.legacy.metrics.data_drift.embedding_drift_methods import DriftMethod
from evidently.metrics import EmbeddingsDrift
from evidently.metrics.embeddings import DistanceDriftMethod, MMDDriftMethod, ModelDriftMethod, RatioDriftMethod
from scipy.linalg import orthogonal_procrustes

from monitoring.drift_report import DriftPart, run, save, skipped
from recsys.models.item_index import ItemIndex
from recsys.settings import MonitoringSettings, Settings

NAME = "embeddings"
STEM = "drift_embeddings"
EMBEDDING = "item_vector"
NEIGHBOURS = 10
METHODS: dict[str, type[DriftMethod]] = {"model": ModelDriftMethod, "distance": DistanceDriftMethod,
                                         "mmd": MMDDriftMethod, "ratio": RatioDriftMethod}


def model_versions(settings: Settings) -> list[tuple[str, Path]]:
    """Candidate model versions with an item index, newest first (by the index's `created_at`)."""
    root = settings.data_path / "models"
    found = []
    for meta in root.glob("*/item_index/meta.json") if root.exists() else []:
        created = str(json.loads(meta.read_text()).get("created_at", ""))
        found.append((created, meta.parent.parent.name, meta.parent.parent))
    return [(version, folder) for _, version, folder in sorted(found, reverse=True)]


def item_vectors(folder: Path) -> tuple[list[str], np.ndarray]:
    """The built items of a version's index and their vectors."""
    index = ItemIndex.load(folder / "item_index")
    raw = index.faiss_index
    if isinstance(raw, faiss.IndexIVF):
        raw.make_direct_map()
    return index.item_ids[:raw.ntotal], raw.reconstruct_n(0, raw.ntotal)


def drift_method(settings: MonitoringSettings) -> DriftMethod:
    """The configured method, without bootstrap so that `score > threshold` is its verdict."""
    method = METHODS[settings.embedding_drift_method]
    if settings.embedding_drift_threshold is not None:
        return method(threshold=settings.embedding_drift_threshold)  # type: ignore[call-arg]
    return method()


def neighbour_overlap(old: np.ndarray, new: np.ndarray, rows: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean share of the `rows` items' top-k inner-product neighbours (among all shared items) both agree on."""
    def top(vectors: np.ndarray) -> np.ndarray:
        scores = vectors[rows] @ vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf
        return np.argpartition(-scores, k, axis=1)[:, :k]

    before, after = top(old), top(new)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(before, after, strict=True)]))


def embedding_drift(settings: Settings, folder: Path) -> DriftPart:
    """Drift of item vectors from the second newest version to the newest, over items both hold."""
    monitoring = settings.monitoring
    versions = model_versions(settings)
    if len(versions) < 2:
        return skipped(NAME, f"{len(versions)} candidate model version(s) under {settings.data_path / 'models'}; "
                             f"the comparison needs two")
    (new_version, new_folder), (old_version, old_folder) = versions[0], versions[1]
    new_ids, new_vectors = item_vectors(new_folder)
    old_ids, old_vectors = item_vectors(old_folder)
    if new_vectors.shape[1] != old_vectors.shape[1]:
        return skipped(NAME, f"{old_version} has {old_vectors.shape[1]} dimensions, {new_version} "
                             f"{new_vectors.shape[1]}: no rotation maps one onto the other")
    old_row = {item: row for row, item in enumerate(old_ids)}
    shared = [(row, old_row[item]) for row, item in enumerate(new_ids) if item in old_row]
    if len(shared) < monitoring.drift_min_rows:
        return skipped(NAME, f"{len(shared)} items in both {old_version} and {new_version}")
    new_shared = new_vectors[[r for r, _ in shared]].astype(np.float64)
    old_shared = old_vectors[[r for _, r in shared]].astype(np.float64)
    rotation, _ = orthogonal_procrustes(old_shared, new_shared)
    aligned = old_shared @ rotation
    rows = np.random.default_rng(0).permutation(len(shared))[:monitoring.embedding_sample_items]
    method = drift_method(monitoring)
    columns = [f"e{d}" for d in range(new_vectors.shape[1])]
    data = DataDefinition(numerical_columns=columns, embeddings={EMBEDDING: columns})
    snapshot = run([EmbeddingsDrift(embeddings_name=EMBEDDING, drift_method=method)],
                   pd.DataFrame(new_shared[rows], columns=columns), pd.DataFrame(aligned[rows], columns=columns), data)
    score = float(snapshot.dict()["metrics"][0]["value"])
    drifted = score > method.threshold  # type: ignore[attr-defined]
    overlap = neighbour_overlap(aligned, new_shared, rows[:min(len(rows), 500)])
    line = (f"{NAME}: {'drifted' if drifted else 'no drift'} from {old_version} to {new_version} "
            f"({settings.monitoring.embedding_drift_method} score {score:.3f}, threshold "
            f"{method.threshold:.3f}; {len(rows):,} of {len(shared):,} shared items; "  # type: ignore[attr-defined]
            f"{overlap:.0%} of top-{NEIGHBOURS} neighbours kept)")
    metrics = {"embedding_drift_score": score, "embedding_drifted": float(drifted),
               "embedding_neighbour_overlap": overlap, "embedding_shared_items": float(len(shared))}
    return DriftPart(NAME, not drifted, line, save(snapshot, folder, STEM), metrics)
