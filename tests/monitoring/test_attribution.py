"""Impressions from the serving log and events attributed to them, by the id the client sent back or by time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from monitoring.attribution import attribute, impressions, load
from recsys import serving_log
from recsys.backends import open_lake
from recsys.settings import Settings

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def record(request_id: str, user: str, items: list[str], at: datetime, variant: str = "control") -> dict[str, object]:
    return {"request_id": request_id, "served_at": int(at.timestamp() * 1000), "user_id": user, "variant": variant,
            "bucket": 3, "model_version": "r1", "candidates_version": "c1", "degradation": "full", "cached": False,
            "latency_ms": 12.5, "stage_ms": {"total": 12.5}, "item_ids": items,
            "scores": [1.0 / (k + 1) for k in range(len(items))], "sources": ["collaborative"] * len(items),
            "explanations": ["similar_users"] * len(items), "features": None}


def event(user: str, item: str, at: datetime, action: str = "click",
          request_id: str | None = None) -> dict[str, object]:
    return {"event_id": f"{user}-{item}-{at.timestamp()}-{action}", "user_id": user, "item_id": item,
            "event_time": pd.Timestamp(at), "action_type": action, "value": None, "session_id": None,
            "context": json.dumps({"request_id": request_id}) if request_id else None}


def test_impressions_are_one_row_per_served_item_in_rank_order() -> None:
    log = serving_log.to_table([record("a", "u1", ["i1", "i2", "i3"], T0), record("b", "u2", ["i9"], T0)]).to_pandas()
    shown = impressions(log)
    assert shown[["request_id", "item_id", "rank"]].values.tolist() == [
        ["a", "i1", 1], ["a", "i2", 2], ["a", "i3", 3], ["b", "i9", 1]]
    assert shown.loc[1, "score"] == pytest.approx(0.5)


def test_an_event_is_attributed_by_the_request_id_it_names_before_time() -> None:
    later = T0 + timedelta(minutes=5)
    log = serving_log.to_table([record("first", "u1", ["i1", "i2"], T0),
                                record("second", "u1", ["i2", "i1"], later)]).to_pandas()
    events = pd.DataFrame([
        event("u1", "i1", later + timedelta(seconds=10), request_id="first"),  # named: first, although second is newer
        event("u1", "i1", later + timedelta(seconds=20)),  # no id: the latest impression, second (rank 2)
        event("u1", "i2", later + timedelta(seconds=30), request_id="unknown"),  # unknown id: falls back to time
        event("u1", "i7", later + timedelta(seconds=40)),  # never shown: organic
        event("u1", "i1", later + timedelta(hours=2)),  # past the window
    ])
    out = attribute(impressions(log), events, timedelta(minutes=30))
    assert out["request_id"].tolist() == ["first", "second", "second", None, None]
    assert out["rank"].tolist()[:3] == [1.0, 2.0, 1.0]
    assert out["rank"].isna().tolist()[3:] == [True, True]


def test_load_reads_the_window_from_the_lake(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    serving_log.write(settings.lake_path, [record("a", "u1", ["i1", "i2"], T0), record("a", "u1", ["i1", "i2"], T0),
                                           record("b", "u2", ["i5"], T0 + timedelta(days=1))])
    open_lake(settings).write_interactions(pd.DataFrame([event("u1", "i2", T0 + timedelta(minutes=1), request_id="a"),
                                                         event("u2", "i5", T0 - timedelta(days=3))]))
    served = load(settings, since=T0, until=T0 + timedelta(hours=1))
    assert served.log["request_id"].tolist() == ["a"]  # delivered twice, counted once
    assert served.impressions["item_id"].tolist() == ["i1", "i2"]
    assert served.events[["item_id", "request_id", "rank"]].values.tolist() == [["i2", "a", 2.0]]
