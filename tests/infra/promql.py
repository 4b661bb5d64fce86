"""The series our code exports, and a check that a PromQL expression reads only those (with their labels).

Prometheus rules and dashboards name metrics as strings; a metric renamed in code leaves them silently empty.
`unknown_references(expr)` lists what an expression names that no registry exports, so tests can fail on it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from bento_services import metrics as serving_metrics
from recsys.streaming import metrics as consumer_metrics

#: Every registry a /metrics endpoint serves: the API's and the consumers' (the API's includes them in `local`).
REGISTRIES: tuple[CollectorRegistry, ...] = (serving_metrics.REGISTRY, consumer_metrics.REGISTRY)
#: Collectors the API registers when it starts, not on import: the newest drift report's gauges.
AT_START: tuple[Collector, ...] = (serving_metrics.DriftCollector(Path("/nonexistent")),)
#: Labels Prometheus adds to every scraped series, and the bucket bound of histograms.
ADDED_LABELS = {"job", "instance"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",), "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"\b(recsys_[A-Za-z0-9_:]*)")
_SELECTOR = re.compile(r"\b(recsys_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Series:
    name: str
    labels: frozenset[str]


def exported() -> dict[str, Series]:
    """Each series name the registries expose (`recsys_requests_total`, `..._bucket`, a gauge's own name) with
    the labels it carries (`le` on buckets)."""
    found: dict[str, Series] = {}
    for name, kind, labels in _families():
        for suffix in SUFFIXES[kind]:
            extra = {"le"} if suffix == "_bucket" else set()
            found[name + suffix] = Series(name + suffix, labels | extra)
    return found


def _families() -> Iterator[tuple[str, str, frozenset[str]]]:
    """(name, type, label names) of every metric family. prometheus_client keeps label names in attributes it
    does not document: a labelled metric without children exposes no sample to read them from."""
    collectors = {c for registry in REGISTRIES for c in registry._names_to_collectors.values()} | set(AT_START)
    for collector in collectors:
        if hasattr(collector, "_labelnames"):  # Counter, Gauge, Histogram, ...
            yield collector._name, collector._type, frozenset(collector._labelnames)  # type: ignore[attr-defined]
        else:  # a custom collector: its families say what it exports
            describe = getattr(collector, "describe", None)  # GcPauses has only `collect`
            for family in describe() if describe is not None else collector.collect():  # type: ignore[attr-defined]
                yield family.name, family.type, frozenset(getattr(family, "_labelnames", ()))


def metric_names(expr: str) -> set[str]:
    """The `recsys_*` metric names an expression reads (string literals left out)."""
    return set(_NAME.findall(_STRING.sub('""', expr)))


def unknown_references(expr: str, series: dict[str, Series] | None = None) -> list[str]:
    """What `expr` names that nothing exports: metric names, labels in a selector, labels it groups by."""
    series = exported() if series is None else series
    bare = _STRING.sub('""', expr)
    names = metric_names(expr)
    problems = [f"metric {name} is not exported" for name in sorted(names - set(series))]
    for name, matchers in _SELECTOR.findall(bare):
        if name in series:
            problems += [f"{name} has no label {label}" for label in _MATCHER.findall(matchers)
                         if label not in series[name].labels | ADDED_LABELS]
    known = set(ADDED_LABELS).union(*(series[name].labels for name in names if name in series))
    for grouping in _GROUPING.findall(bare):
        problems += [f"no metric in the expression has label {label}"
                     for label in (part.strip() for part in grouping.split(",")) if label and label not in known]
    if not names:
        problems.append("reads no recsys_* metric")
    return problems


def promtool() -> str:
    """promtool's path, or a failure that says how to install it (never a skip)."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run `bash infra/promtool.sh` (make test runs it)")
    return found
