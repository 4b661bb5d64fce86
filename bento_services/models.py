"""The serving models in BentoML's model store, so that a built Bento carries them.

* `ranker` (training saves it: `training.ranker_train.save_ranker`).
* `recsys-candidates`: the candidate artifact, a `models/<version>` folder that `recsys build-candidates`
  writes (two-tower checkpoint and FAISS item index), saved as is by `save_candidates`.

`reference(name)` is what the service puts at class level: the newest stored version pinned, or None when
the store has none (the service then degrades: no ranker means candidate-score order, no candidate artifact
means the `models/CURRENT` folder of the data directory, else popular items).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from bento_services.pipeline.retrieve import current_folder
from recsys.errors import RecsysError
from recsys.private.bentoml import model_store
from recsys.release import read_release
from recsys.settings import Settings

CANDIDATES_MODEL = "recsys-candidates"
RANKER_MODEL = "ranker"  # recsys.models.ranker.MODEL_NAME, without importing torch (a test keeps them equal)
log = logging.getLogger(__name__)


class CandidateArtifactError(RecsysError):
    """The folder given as a candidate artifact is not one."""


def save_candidates(folder: Path, home: Path | None = None) -> str:
    """Copy a candidate artifact folder into the model store as `recsys-candidates:<its version>`."""
    meta_file = folder / "item_index" / "meta.json"
    if not meta_file.is_file():
        raise CandidateArtifactError(f"{folder} holds no item_index/meta.json; build it with "
                                     "`recsys build-candidates`")
    meta = json.loads(meta_file.read_text())
    version = folder.name
    labels = {"stage": "candidates", "kind": "two_tower_faiss"}
    metadata = {"version": version, **{k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)}}
    with bentoml.models.create(f"{CANDIDATES_MODEL}:{version}", labels=labels, metadata=metadata,
                               module=__name__, _model_store=model_store(home)) as model:
        shutil.copytree(folder, model.path, dirs_exist_ok=True)
    return f"{CANDIDATES_MODEL}:{version}"


def reference(name: str, prefer: str | None = None) -> bentoml.models.BentoModel | None:
    """`name:prefer` when the configured store has that version, else `name:latest`, pinned; None when neither.

    `prefer` is the version the data directory names (`models/CURRENT`): `make serve` serves that one, while a
    built Bento, whose store holds only the version it was built with, serves its own.
    """
    for version in ([prefer] if prefer else []) + ["latest"]:
        try:
            return bentoml.models.BentoModel(bentoml.models.get(f"{name}:{version}").tag)
        except NotFound:
            continue
    log.warning("no %s in the model store: the service will serve without it", name)
    return None


def path_of(model: Any) -> Path | None:
    """The folder of a stored model, or of a class-level reference (which a service instance sees resolved)."""
    if model is None:
        return None
    stored = model.resolve() if isinstance(model, bentoml.models.BentoModel) else model
    return Path(stored.path)


def served_candidates(settings: Settings, pinned: Any) -> Path | None:
    """The candidate folder the service serves for its whole life (the pinned model's), or None when it follows
    the release record instead: with `serving.follow_release` on and a `models/RELEASE.json` in the data
    directory, every worker serves the versions the record names and reads it again every
    `serving.release_poll_seconds` (`build_pipeline` without a folder, as `recsys serve`). A Bento deployed
    without the data directory has no record and keeps serving the versions it pinned."""
    if settings.serving.follow_release and read_release(settings.data_path) is not None:
        return None
    return path_of(pinned)


def save_current(settings: Settings, home: Path | None = None) -> str | None:
    """Save the data directory's `models/CURRENT` artifact unless the store has that version; its tag or None."""
    folder = current_folder(settings)
    if folder is None:
        log.warning("no models/CURRENT in %s: nothing to save", settings.data_path)
        return None
    tag = f"{CANDIDATES_MODEL}:{folder.name}"
    try:
        bentoml.models.get(tag, _model_store=model_store(home))
        return tag
    except NotFound:
        return save_candidates(folder, home)
