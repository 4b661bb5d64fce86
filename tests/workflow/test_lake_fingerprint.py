"""The lake fingerprint that lets the pipeline skip the Spark step: it follows what the feature job reads (the
interaction days and the catalog snapshots), not the serving log that serving appends to between runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from recsys import serving_log
from recsys.stores import Lake
from workflow.steps import lake_fingerprint


def events(day: str) -> pd.DataFrame:
    at = pd.Timestamp(day, tz="UTC")
    return pd.DataFrame({"event_id": [f"e-{day}"], "user_id": ["u1"], "item_id": ["i1"], "event_time": [at],
                         "action_type": ["click"], "value": [None], "session_id": ["s1"], "context": [None]})


def test_served_answers_leave_the_fingerprint_and_new_events_or_items_change_it(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_interactions(events("2026-01-01"))
    lake.write_snapshot("items", pd.DataFrame({"item_id": ["i1"], "title": ["one"]}))
    before = lake_fingerprint(lake.root)

    served = {"request_id": "r1", "served_at": int(datetime(2026, 1, 2, tzinfo=UTC).timestamp() * 1000),
              "user_id": "u1", "candidates_version": "v1", "degradation": "full", "cached": False}
    assert serving_log.write(lake.root, [served]) == 1
    assert lake_fingerprint(lake.root) == before

    lake.write_interactions(events("2026-01-02"))
    after_events = lake_fingerprint(lake.root)
    assert after_events != before
    lake.write_snapshot("items", pd.DataFrame({"item_id": ["i1", "i2"], "title": ["one", "two"]}))
    assert lake_fingerprint(lake.root) != after_events
