"""Building what candidate generation serves from: the two-tower checkpoint, the FAISS item index,
the item-to-item neighbours and the user vectors in the online store, all stamped with one model
version.

Layout: `data_dir/models/<version>/two_tower/`, `.../item_index/` and `.../item_neighbours/`;
`data_dir/models/CURRENT` names the version serving should load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embeddings.train import TrainConfig, item_vectors, save, train, user_vectors
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


def build_candidate_artifacts(
    settings: Settings, config: TrainConfig = TrainConfig(), progress: Callable[[str], None] = print
) -> CandidateArtifacts:
    lake = open_lake(settings)
    items = lake.latest_snapshot("items")
    if items is None:
        raise InvalidInputError(f"no item catalog in the lake at {lake.root}; import data first")
    trained = train(lake, config, progress)
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
    with open_user_vectors(settings) as store:
        store.put(users, user_vectors(trained, users, list(histories)), trained.version, trained.data_end)
    progress(f"user vectors: {len(users):,} written to the online store")
    (settings.data_path / "models" / "CURRENT").write_text(trained.version)
    return CandidateArtifacts(trained.version, folder, len(index), len(users))

