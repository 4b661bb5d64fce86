"""Ranking quality with Evidently's recsys metrics: clicks at the top score higher than clicks at the bottom,
the report's files are written, and a group that ranks its clicks low fails the verdict."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from monitoring.quality import quality_report, relevance
from recsys import serving_log
from recsys.backends import open_lake
from recsys.settings import Settings
from tests.conftest import make_settings

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
ITEMS = [f"i{n}" for n in range(40)]


def event(user: str, item: str, at: datetime, action: str = "click", request_id: str | None = None,
          value: float | None = None) -> dict[str, object]:
    return {"event_id": f"{user}-{item}-{at.timestamp()}-{action}", "user_id": user, "item_id": item,
            "event_time": pd.Timestamp(at), "action_type": action, "value": value, "session_id": None,
            "context": json.dumps({"request_id": request_id}) if request_id else None}


def served_world(settings: Settings, lists: dict[str, tuple[int, int]]) -> None:
    """Per variant (number of lists, rank of the clicked item): answers in the serving log, the clicks that name
    them, some earlier history per user, and an item catalog of four categories."""
    records, events = [], []
    for v, (variant, (count, clicked_rank)) in enumerate(lists.items()):
        for n in range(count):
            user, at, request_id = f"u{v}-{n % 15}", T0 + timedelta(minutes=n), f"{variant}-{n}"
            items = [ITEMS[(n + 3 * k) % len(ITEMS)] for k in range(10)]
            records.append({"request_id": request_id, "served_at": int(at.timestamp() * 1000), "user_id": user,
                            "variant": variant, "bucket": v, "model_version": "ranker-1", "candidates_version": "c1",
                            "degradation": "full", "cached": False, "latency_ms": 10.0, "stage_ms": {"total": 10.0},
                            "item_ids": items, "scores": [10.0 - k for k in range(10)],
                            "sources": ["collaborative"] * 10, "explanations": ["similar_users"] * 10,
                            "features": None})
            events.append(event(user, items[clicked_rank - 1], at + timedelta(seconds=30), request_id=request_id))
            events.append(event(user, ITEMS[(n + 1) % len(ITEMS)], T0 - timedelta(days=2, minutes=n), action="view"))
    serving_log.write(settings.lake_path, records)
    lake = open_lake(settings)
    lake.write_interactions(pd.DataFrame(events))
    lake.write_snapshot("items", pd.DataFrame({"item_id": ITEMS, "category": [f"c{n % 4}" for n in range(40)]}))


def quality_settings(tmp_path: Path) -> Settings:
    base = make_settings("local", tmp_path)
    return base.model_copy(update={"monitoring": base.monitoring.model_copy(update={"quality_min_lists": 20})})


def run(settings: Settings) -> tuple[Path, bool, dict[str, dict[str, Any]]]:
    folder, verdict = quality_report(settings, T0 - timedelta(hours=1), T0 + timedelta(hours=3), offline=False)
    details = json.loads((folder / "quality_online.json").read_text())
    assert verdict.kind == "quality" and set(verdict.files) <= {p.name for p in folder.iterdir()}
    return folder, verdict.ok, {g["variant"]: g for g in details["groups"]}


def test_clicks_at_the_top_score_higher_than_clicks_at_rank_ten(tmp_path: Path) -> None:
    settings = quality_settings(tmp_path)
    served_world(settings, {"control": (60, 1), "exp_low": (40, 10)})
    folder, ok, groups = run(settings)
    top, low = groups["control"]["metrics"], groups["exp_low"]["metrics"]
    for metric in ("ndcg@10", "mrr@10", "map@10"):
        assert top[metric] > low[metric] + 0.5, metric
    assert top["hit_rate@10"] == low["hit_rate@10"] == pytest.approx(1.0)  # both lists hold the click somewhere
    assert groups["control"]["clicked_lists"] == 60 and groups["exp_low"]["lists"] == 40
    assert not ok  # exp_low is far below control, the most served group
    for name in ["quality_online.html", "quality_online.json", groups["control"]["file"], groups["exp_low"]["file"]]:
        assert (folder / name).stat().st_size > 1000, name
    page = (folder / "quality_online.html").read_text()
    assert groups["exp_low"]["file"] in page and "exp_low" in page
    verdict = json.loads((folder / "verdicts" / "quality.json").read_text())
    assert verdict["ok"] is False and "exp_low" in verdict["line"] and verdict["metrics"]["online_ndcg@10"] == 1.0


def test_groups_of_equal_quality_pass(tmp_path: Path) -> None:
    settings = quality_settings(tmp_path)
    served_world(settings, {"control": (40, 2), "exp_same": (30, 2)})
    _, ok, groups = run(settings)
    assert ok
    assert groups["control"]["metrics"]["ndcg@10"] == pytest.approx(groups["exp_same"]["metrics"]["ndcg@10"])
    assert groups["control"]["metrics"]["novelty"] is not None  # the users' earlier items are the training data


def test_relevance_is_the_largest_action_weight_of_an_impression() -> None:
    events = pd.DataFrame([
        {**event("u", "a", T0, "view"), "request_id": "r"},
        {**event("u", "a", T0, "purchase"), "request_id": "r"},
        {**event("u", "b", T0, "skip"), "request_id": "r"},
        {**event("u", "c", T0, "rate", value=5.0), "request_id": "r"},
        {**event("u", "d", T0, "click"), "request_id": None},  # not attributed: no relevance
    ])
    got = relevance(events).set_index("item_id")["target"].to_dict()
    assert got == {"a": 5.0, "b": 0.0, "c": 4.0}
