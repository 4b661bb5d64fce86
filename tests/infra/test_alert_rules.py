"""The Prometheus files in infra/deploy/prometheus/: promtool accepts them, each alert fires on planted series in
its unit tests (alerts_test.yml), and every rule reads metrics our code exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from recsys.settings import ROOT_DIR
from tests.infra.promql import exported, promtool, unknown_references

PROMETHEUS = ROOT_DIR / "infra" / "deploy" / "prometheus"


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in rules.stdout
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_each_alert_fires_on_planted_series_and_not_inside_its_threshold() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    alerts = {str(rule["alert"]) for rule in _rules()}
    assert alerts - fired == set(), "alerts no unit test sees firing"


def test_promtool_fails_a_rule_whose_threshold_moved(tmp_path: Path) -> None:
    """The unit tests pin the thresholds: a rule edited to fire later fails them."""
    moved = (PROMETHEUS / "alerts.yml").read_text().replace("sum by (consumer) (recsys_consumer_lag) > 10000",
                                                           "sum by (consumer) (recsys_consumer_lag) > 20000")
    assert moved != (PROMETHEUS / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(moved)
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS / "alerts_test.yml").read_text())
    result = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "alertname: RecsysConsumerLag" in result.stdout + result.stderr


def test_every_rule_reads_metrics_and_labels_our_registries_export() -> None:
    series = exported()
    problems = {str(rule["alert"]): unknown_references(str(rule["expr"]), series) for rule in _rules()}
    assert {alert: found for alert, found in problems.items() if found} == {}


@pytest.mark.parametrize(("expr", "says"), [
    ("rate(recsys_requests_totl[5m])", "metric recsys_requests_totl is not exported"),
    ('sum(rate(recsys_requests_total{code="500"}[5m]))', "recsys_requests_total has no label code"),
    ("sum by (stage) (rate(recsys_requests_total[5m]))", "no metric in the expression has label stage"),
    ("recsys_consumer_batch_seconds > 1", "metric recsys_consumer_batch_seconds is not exported"),
    ("up == 0", "reads no recsys_* metric"),
])
def test_the_check_names_what_a_renamed_metric_or_label_breaks(expr: str, says: str) -> None:
    assert says in unknown_references(expr)


def test_thresholds_are_the_settings_defaults() -> None:
    """The bounds the project's own checks use: /readyz's lag, the drift report's share, the stage budgets."""
    from recsys.settings import MonitoringSettings, ServingSettings, StreamingSettings

    bound = {str(rule["alert"]): float(re.findall(r">\s*([0-9.e+]+)\s*$", str(rule["expr"]).strip())[-1])
             for rule in _rules() if re.search(r">\s*[0-9.e+]+\s*$", str(rule["expr"]).strip())}
    assert bound["RecsysConsumerLag"] == StreamingSettings().lag_threshold
    assert bound["RecsysFeatureDrift"] == MonitoringSettings().drift_share_threshold
    assert bound["RecsysRecommendationsP99OverBudget"] == sum(ServingSettings().stage_timeout_ms.values()) / 1000
