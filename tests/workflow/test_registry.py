"""`recsys models list`: each candidate version with its window, its run's metrics and whether it serves."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from recsys.models.item_index import ItemIndex
from tests.conftest import make_settings
from workflow.registry import list_models


def test_versions_are_listed_with_window_metrics_and_state(tmp_path: Path) -> None:
    settings = make_settings("local", tmp_path)
    models = settings.data_path / "models"
    for name, end in (("v-old", 5), ("v-new", 9)):
        ItemIndex.build(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"], model_version=name, version=name,
                        data_start=datetime(2026, 1, 1, tzinfo=UTC), data_end=datetime(2026, 1, end, tzinfo=UTC),
                        ).save(models / name / "item_index")
    (models / "CURRENT").write_text("v-old")
    run = settings.data_path / "pipeline" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "evaluation.json").write_text(json.dumps({"new": {"version": "v-new", "metrics": {"ndcg@10": 0.25}}}))

    found = {m.version: m for m in list_models(settings, home=tmp_path / "bentoml")}
    assert set(found) == {"v-old", "v-new"}  # an empty model store: no rankers
    assert found["v-old"].state == "serving" and found["v-new"].state == "retired"
    assert found["v-new"].metrics == {"ndcg@10": 0.25} and found["v-new"].run_id == "r1"
    assert found["v-new"].data_end is not None and found["v-new"].data_end.startswith("2026-01-09")
