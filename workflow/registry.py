"""`recsys models list`: every candidate model version under `data_dir/models/` and every ranker in the BentoML
model store, with its data window, its metrics and its state.

State: `serving` is what serving loads (the version `models/CURRENT` names; the store's `ranker:latest`),
`retired` every other. (A `canary` state belongs to staged releases, which record their own.) A candidate
version's metrics are those its pipeline run measured on the held-out day (`evaluation.json` of the run that
built it); a ranker's are those saved with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bentoml

from bento_services.pipeline.retrieve import current_folder
from recsys.private.bentoml import model_store
from recsys.release import Release, read_release
from recsys.settings import Settings
from workflow.manifest import runs_dir

RANKER = "ranker"  # recsys.models.ranker.MODEL_NAME, without importing torch


@dataclass(frozen=True)
class ModelVersion:
    kind: str  # candidates | ranker
    version: str
    state: str  # serving (the stable version) | canary | retired
    data_start: str | None
    data_end: str | None
    created_at: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None  # the pipeline run that built it, when one did

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_models(settings: Settings, home: Path | None = None) -> list[ModelVersion]:
    """Candidate versions (newest first), then rankers (newest first)."""
    return candidate_versions(settings) + ranker_versions(home, read_release(settings.data_path))


def candidate_versions(settings: Settings) -> list[ModelVersion]:
    release = read_release(settings.data_path)
    serving = current_folder(settings)
    states = {serving.name: "serving"} if serving is not None else {}
    if release is not None:
        states = {release.stable.candidates: "serving"}
        if release.canary is not None:
            states[release.canary.candidates] = f"canary {release.share}%"
    measured = _measured_by_runs(settings.data_path)
    found = []
    for meta_file in (settings.data_path / "models").glob("*/item_index/meta.json"):
        meta = json.loads(meta_file.read_text())
        folder = meta_file.parent.parent
        run_id, metrics = measured.get(folder.name, (None, {}))
        found.append(ModelVersion("candidates", folder.name, states.get(folder.name, "retired"),
                                  meta.get("data_start"), meta.get("data_end"), meta.get("created_at"), metrics,
                                  run_id))
    return sorted(found, key=lambda m: m.created_at or "", reverse=True)


def ranker_versions(home: Path | None = None, release: Release | None = None) -> list[ModelVersion]:
    """Rankers newest first; with a release record its stable ranker is serving and its canary's canary, without
    one `ranker:latest` is serving."""
    store = model_store(home)
    try:
        stored = bentoml.models.list(RANKER, _model_store=store)
        latest = str(bentoml.models.get(f"{RANKER}:latest", _model_store=store).tag.version)
    except bentoml.exceptions.NotFound:
        return []
    states = {latest: "serving"}
    if release is not None:
        states = {release.stable.ranker: "serving"} if release.stable.ranker else {}
        if release.canary is not None and release.canary.ranker:
            states[release.canary.ranker] = f"canary {release.share}%"
    found = []
    for model in stored:
        meta: dict[str, Any] = dict(model.info.metadata)
        metrics = {k: float(v) for k, v in dict(meta.get("metrics") or {}).items() if isinstance(v, int | float)}
        version = str(model.tag.version)
        found.append(ModelVersion("ranker", version, states.get(version, "retired"),
                                  _text(meta.get("data_start")), _text(meta.get("data_end")),
                                  model.info.creation_time.isoformat(timespec="seconds"), metrics))
    return sorted(found, key=lambda m: m.created_at or "", reverse=True)


def _measured_by_runs(data_path: Path) -> dict[str, tuple[str, dict[str, float]]]:
    """Candidate version -> (run id, the new version's held-out-day metrics), from every run's evaluation."""
    out = {}
    for evaluation in sorted(runs_dir(data_path).glob("*/evaluation.json")):
        result = json.loads(evaluation.read_text())
        out[result["new"]["version"]] = (evaluation.parent.name, result["new"]["metrics"])
    return out


def _text(value: object) -> str | None:
    return None if value is None else str(value)
