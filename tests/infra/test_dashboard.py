"""The Grafana dashboard (infra/deploy/grafana/recsys.json): valid JSON whose every query is PromQL that promtool
parses and that reads only metrics and labels our registries export, covering serving, consumers and drift."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from recsys.settings import ROOT_DIR
from tests.infra.promql import exported, metric_names, promtool, unknown_references

DASHBOARD = ROOT_DIR / "infra" / "deploy" / "grafana" / "recsys.json"
#: Grafana's interval variables, as Prometheus would see them after Grafana fills them in.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


def _queries() -> dict[str, str]:
    """Each query of the dashboard, keyed by "<panel title> / <refId>"."""
    dashboard = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found[f"{panel['title']} / {target['refId']}"] = target["expr"]

    walk(dashboard["panels"])
    return found


def _filled(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_the_dashboard_is_grafana_json_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, f"{panel['title']} is wider than the grid"
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len(_queries()) >= 15


def test_every_query_reads_metrics_and_labels_our_registries_export() -> None:
    series = exported()
    problems = {name: unknown_references(_filled(expr), series) for name, expr in _queries().items()}
    assert {name: found for name, found in problems.items() if found} == {}


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Each query as a recording rule: `promtool check rules` parses its PromQL."""
    rules = [{"record": f"dashboard:query_{n}", "expr": _filled(expr)} for n, expr in enumerate(_queries().values())]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", "queries.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_what_the_team_watches() -> None:
    """Serving (rate, latency, errors, degradations, caches, stages), consumers (events, lag, dead letters, newest
    age) and drift: a panel for each."""
    shown = set().union(*(metric_names(expr) for expr in _queries().values()))
    watched = {"recsys_requests_total", "recsys_request_seconds_bucket", "recsys_degradations_total",
               "recsys_cache_lookups_total", "recsys_stage_seconds_bucket", "recsys_consumer_events_total",
               "recsys_consumer_lag", "recsys_consumer_dead_letters_total",
               "recsys_consumer_newest_event_age_seconds", "recsys_drift_share"}
    assert watched - shown == set()
    quantiles = " ".join(_queries().values())
    assert "histogram_quantile(0.5," in quantiles and "histogram_quantile(0.99," in quantiles
