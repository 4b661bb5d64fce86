"""Train/serve skew (`recsys monitor skew`): the ranker's input as served, against the same features recomputed
offline, point in time, for the sampled requests of the window.

A sampled request's log row holds the ranker's input (`features`: one value per ranked candidate, the
`view__feature` columns of its feature service). Those values are recomputed the way training computes them:
Feast's `get_historical_features` through the same feature service, one entity row per (user_id, item_id,
event_timestamp = served_at), the request time and device as the on-demand inputs, missing and stale values
filled with the same typed defaults (`training.training_set.build_training_set`). The device is read back
from the logged `device_type` (folding a folded device again gives the same value).

Numbers match when they differ by at most `monitoring.skew_tolerance` x max(1, |offline value|); other
values (strings, lists element by element) when they are equal. Per feature the report gives the share of
mismatching values and the largest differences (request, user, item, both values). A feature whose share is
above `monitoring.skew_threshold` is skewed: the online path computes it differently (a transformation, a
default or a type only one side has), or reads another row (the online store materialized behind or ahead
of the offline tables, a streaming push the offline tables never got).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore

from monitoring.reports import Verdict, report_dir, write_verdict
from monitoring.window import report_window
from recsys import serving_log
from recsys.features.service import service_layout
from recsys.features.store import open_feature_store
from recsys.settings import Settings
from training.training_set import build_training_set

KEYS = ("request_id", "served_at", "user_id", "item_id")
EXAMPLES = 5


@dataclass(frozen=True)
class FeatureSkew:
    feature: str
    compared: int
    mismatches: int
    share: float
    largest_difference: float | None  # numbers only
    examples: list[dict[str, Any]]  # the largest differences: request_id, user_id, item_id, served, offline


def served_features(log: pd.DataFrame) -> pd.DataFrame:
    """One row per ranked candidate of each sampled request: KEYS, then the logged feature columns."""
    parts = []
    for row in log.dropna(subset=["features"]).itertuples(index=False):
        columns = json.loads(row.features)
        size = len(columns.get("item_id", []))
        if not size:
            continue
        frame = pd.DataFrame({name: values for name, values in columns.items() if len(values) == size})
        frame["request_id"], frame["served_at"] = row.request_id, row.served_at
        frame["user_id"] = frame["user_id"].astype(str) if "user_id" in frame else row.user_id
        parts.append(frame)
    if not parts:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in KEYS})
    frame = pd.concat(parts, ignore_index=True)
    return frame[[*KEYS, *(c for c in frame.columns if c not in KEYS)]]


def service_for(store: FeatureStore, columns: Sequence[str]) -> str:
    """The feature service whose columns are the logged ones: most in common, then fewest others."""
    logged = set(columns)
    best = min(store.list_feature_services(), key=lambda s: (
        -len(logged & _refs(store, s.name)), len(_refs(store, s.name) - logged), s.name))
    return best.name


def _refs(store: FeatureStore, service: str) -> set[str]:
    return {spec.ref for spec in service_layout(store, service).specs}


def recomputed(store: FeatureStore, served: pd.DataFrame, service: str) -> pd.DataFrame:
    """The service's features of each served row as training computes them at `served_at` (same row order)."""
    device = next((c for c in served.columns if c.endswith("__device_type")), None)
    labelled = pd.DataFrame({
        "user_id": served["user_id"].astype(str), "item_id": served["item_id"].astype(str),
        "event_timestamp": pd.to_datetime(served["served_at"], utc=True), "label": 0,
        "device": served[device].fillna("").astype(str) if device else "",
    })
    return build_training_set(store, labelled, service).frame


def compare(served: pd.DataFrame, offline: pd.DataFrame, features: Sequence[str],
            tolerance: float) -> list[FeatureSkew]:
    """Per feature, mismatches between served and offline values, the worst first."""
    out = []
    for feature in features:
        mismatch, difference = _differences(served[feature].tolist(), offline[feature].tolist(), tolerance)
        order = np.argsort(-np.nan_to_num(np.where(mismatch, difference, -1.0), nan=np.inf), kind="stable")
        worst = [int(i) for i in order[: min(EXAMPLES, int(mismatch.sum()))]]
        examples = [{"request_id": served["request_id"].iat[i], "user_id": served["user_id"].iat[i],
                     "item_id": served["item_id"].iat[i], "served": _plain(served[feature].iat[i]),
                     "offline": _plain(offline[feature].iat[i]),
                     "difference": None if math.isnan(difference[i]) else float(difference[i])} for i in worst]
        numeric = difference[mismatch & ~np.isnan(difference)]
        out.append(FeatureSkew(feature, len(mismatch), int(mismatch.sum()),
                               float(mismatch.mean()) if len(mismatch) else 0.0,
                               float(numeric.max()) if len(numeric) else None, examples))
    return sorted(out, key=lambda s: (-s.share, s.feature))


def _differences(served: list[Any], offline: list[Any], tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """(mismatch, |difference| where both are numbers else NaN) per value."""
    mismatch = np.zeros(len(served), dtype=bool)
    difference = np.full(len(served), np.nan)
    for n, (a, b) in enumerate(zip(served, offline)):
        a, b = _comparable(a, b), _comparable(b, a)
        if _is_number(a) and _is_number(b):
            difference[n] = abs(float(a) - float(b))
            mismatch[n] = difference[n] > tolerance * max(1.0, abs(float(b)))
        else:
            mismatch[n] = not _same(a, b, tolerance)
    return mismatch, difference


def _comparable(value: Any, other: Any) -> Any:
    """Plain Python; times as epoch seconds (an ISO string too, when the other side is a time)."""
    value = _plain(value)
    if isinstance(value, pd.Timestamp | datetime) or (isinstance(value, str) and isinstance(
            _plain(other), pd.Timestamp | datetime)):
        stamp = pd.Timestamp(value)
        return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp()
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(*pair, tolerance) if not (_is_number(pair[0]) and _is_number(
            pair[1])) else abs(pair[0] - pair[1]) <= tolerance * max(1.0, abs(pair[1])) for pair in zip(a, b))
    return bool(a == b) if type(a) is type(b) else str(a) == str(b)


# -- the report --------------------------------------------------------------------------------------------
def skew_report(settings: Settings, since: datetime | None = None,
                until: datetime | None = None) -> tuple[Path, Verdict]:
    """Write skew.html and skew.json in today's folder for the window's newest sampled requests; the verdict."""
    config = settings.monitoring
    folder = report_dir(settings)
    since, until = report_window(settings, since, until)
    log = serving_log.read(settings.lake_path, since, until) if until is not None else pd.DataFrame()
    sampled = log.dropna(subset=["features"]).tail(config.skew_max_requests) if not log.empty else log
    served = served_features(sampled) if not sampled.empty else served_features(pd.DataFrame(columns=["features"]))
    details: dict[str, Any] = {"since": _iso(since), "until": _iso(until), "requests": 0, "rows": 0,
                               "tolerance": config.skew_tolerance, "threshold": config.skew_threshold,
                               "service": None, "features": [], "not_logged": []}
    if served.empty:
        line = "skew: no sampled request in the window (monitoring.feature_sample_rate)"
        found: list[FeatureSkew] = []
    else:
        store = open_feature_store(settings)
        service = service_for(store, list(served.columns))
        refs = [spec.ref for spec in service_layout(store, service).specs]
        features = [r for r in refs if r in served.columns]
        found = compare(served, recomputed(store, served, service), features, config.skew_tolerance)
        details.update(requests=int(served["request_id"].nunique()), rows=len(served), service=service,
                       features=[asdict(s) for s in found], not_logged=[r for r in refs if r not in served.columns])
        skewed = [s for s in found if s.share > config.skew_threshold]
        line = (f"skew: {len(skewed)} of {len(found)} {service} features mismatch in more than "
                f"{config.skew_threshold:.1%} of {len(served):,} values ({details['requests']} requests)")
        if skewed:
            line += ": " + ", ".join(f"{s.feature} {s.share:.0%}" for s in skewed[:5])
    skewed_count = sum(s.share > config.skew_threshold for s in found)
    details["line"], details["ok"] = line, skewed_count == 0
    (folder / "skew.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    (folder / "skew.html").write_text(_html(details))
    verdict = Verdict("skew", skewed_count == 0, line, ["skew.html", "skew.json"],
                      {"skew_features_above": float(skewed_count), "skew_requests": float(details["requests"]),
                       "skew_max_share": max((s.share for s in found), default=0.0)})
    write_verdict(folder, verdict)
    return folder, verdict


def _iso(value: datetime | None) -> str | None:
    return None if value is None else pd.Timestamp(value).isoformat()


def _html(details: dict[str, Any]) -> str:
    """One row per feature, the skewed ones first and marked, with their largest differences."""
    rows = []
    for s in details["features"]:
        examples = "<br>".join(html.escape(f"{e['user_id']} / {e['item_id']}: served {e['served']!r}, offline "
                                           f"{e['offline']!r}") for e in s["examples"])
        flag = " class='skewed'" if s["share"] > details["threshold"] else ""
        largest = "" if s["largest_difference"] is None else f"{s['largest_difference']:.4g}"
        rows.append(f"<tr{flag}><td>{html.escape(s['feature'])}</td><td>{s['compared']}</td><td>{s['mismatches']}"
                    f"</td><td>{s['share']:.2%}</td><td>{largest}</td><td class='ex'>{examples}</td></tr>")
    missing = ", ".join(details["not_logged"]) or "none"
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:right}th{background:#eee}td.ex{text-align:left;font-size:90%}"
             "tr.skewed td{background:#fdd}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Train/serve skew</title><style>{style}"
            f"</style></head><body><h1>Train/serve skew</h1><p>{html.escape(details['line'])}</p>"
            f"<p>Window {html.escape(str(details['since']))} to {html.escape(str(details['until']))}: the ranker's "
            f"input as served, against the same features recomputed point in time through Feast "
            f"(feature service {html.escape(str(details['service']))}); numbers match within "
            f"{details['tolerance']:g} x max(1, |offline|); a feature is skewed above {details['threshold']:.1%} "
            f"mismatches. Features of the service the log lacks: {html.escape(missing)}.</p>"
            f"<table><tr><th>feature</th><th>values</th><th>mismatches</th><th>share</th><th>largest |difference|"
            f"</th><th>largest differences (user / item)</th></tr>{''.join(rows)}</table></body></html>\n")
