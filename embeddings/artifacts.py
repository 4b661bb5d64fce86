"""Building what candidate generation serves from: the two-tower checkpoint, the FAISS item index,
the item-to-item neighbours and the user vectors in the online store, all stamped with one model
version.

Layout: `data_dir/models/<version>/two_tower/`, `.../item_index/`, `.../item_neighbours/` and
`.../user_vectors.npz` (what publication writes to the online store); `data_dir/models/CURRENT` names the
version serving should load. Building with `publish=False` leaves serving untouched (the daily pipeline
publishes only what passed its gate, `publish_candidate_artifacts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from embeddings.train import TrainConfig, item_vectors, save, train, user_vectors
from embeddings.warm_start import Start
from recsys.backends import open_lake, open_user_vectors
from recsys.errors import InvalidInputError
from recsys.models.item_index import ItemIndex
from recsys.models.neighbours import ItemNeighbours
from recsys.settings import Settings


@dataclass(frozen=True)
class CandidateArtifacts:
    version: str
    folder: Path
    items: int
    users: int
    start: Start = field(default_factory=Start)  # how its two-tower model began: from scratch or warm


USER_VECTORS = "user_vectors.npz"


def build_candidate_artifacts(
    settings: Settings, config: TrainConfig = TrainConfig(), progress: Callable[[str], None] = print,
    version: str | None = None, publish: bool = True,
) -> CandidateArtifacts:
    """Train, then write `models/<version>/`; `version` overrides the model's own (`two-tower-<day>-s<seed>`, the
    same for two runs on the same data). `publish`: also write the user vectors online and point CURRENT at it."""
    lake = open_lake(settings)
    items = lake.latest_snapshot("items")
    if items is None:
        raise InvalidInputError(f"no item catalog in the lake at {lake.root}; import data first")
    trained = train(lake, config, progress)
    if version is not None:
        trained.version = version
    folder = settings.data_path / "models" / trained.version
    save(trained, folder / "two_tower")
    vectors = item_vectors(trained, items)
    index = ItemIndex.build(vectors, list(items["item_id"]), model_version=trained.version,
                            data_start=trained.data_start, data_end=trained.data_end, version=trained.version)
    index.save(folder / "item_index")
    progress(f"item index: {len(index):,} items ({index.meta.kind})")
    events = lake.interactions(columns=["user_id", "item_id", "event_time", "action_type"]).to_pandas()
    events = events.sort_values("event_time", kind="stable")
    wanted = events["action_type"] != "skip"
    if config.until is not None:  # the same window the two-tower model was trained on
        wanted &= events["event_time"] < config.until
    neighbours = ItemNeighbours.build(events[wanted], model_version=trained.version,
                                      data_start=trained.data_start, data_end=trained.data_end)
    neighbours.save(folder / "item_neighbours")
    progress(f"item neighbours: {len(neighbours):,} items ({neighbours.meta.method}, "
             f"{neighbours.weights.nnz:,} links)")
    histories = events.groupby("user_id")["item_id"].agg(lambda s: list(s)[-config.history:])
    users = list(histories.index)
    np.savez(folder / USER_VECTORS, users=np.array(users, dtype=str),
             vectors=user_vectors(trained, users, list(histories)), data_end=np.array(trained.data_end.isoformat()))
    built = CandidateArtifacts(trained.version, folder, len(index), len(users), trained.start)
    if publish:
        publish_candidate_artifacts(settings, folder, progress)
    return built


def publish_candidate_artifacts(settings: Settings, folder: Path, progress: Callable[[str], None] = print) -> int:
    """Write the folder's user vectors to the online store, then point `models/CURRENT` at it (replaced
    atomically: serving's watcher never reads half a name). Returns the user vectors written."""
    with np.load(folder / USER_VECTORS) as saved:
        users = [str(u) for u in saved["users"]]
        vectors = saved["vectors"]
        data_end = datetime.fromisoformat(str(saved["data_end"]))
    with open_user_vectors(settings) as store:
        store.put(users, vectors, folder.name, data_end)
    progress(f"user vectors: {len(users):,} written to the online store")
    current = folder.parent / "CURRENT"
    staged = current.with_name(f".CURRENT.{folder.name}")
    staged.write_text(folder.name)
    staged.replace(current)
    return len(users)

