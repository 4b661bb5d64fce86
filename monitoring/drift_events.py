"""Input data quality: the events coming in against the history the models were built from.

Incoming events are those after a cutoff: by default the end of the data window of the candidate model in
service (`data_dir/models/CURRENT`, its item index's `data_end`): what no model has seen yet, the imported
history's tail included when the model was trained on less. Without a model, the cutoff is the lake's newest
event less `drift_window_hours`. (The import's deterministic event ids would also tell imported events from live
ones, but only with the import's source name; the synthetic generator's ids are not deterministic at all.)
The reference is the `drift_reference_days` of history before the cutoff, or all of it when that is too little.

Per event: the action, the value, whether the catalog knows the user and the item (`open_catalog`), whether it
has a session and a `request_id` (attribution), and whether a required value is missing. Evidently's
DataSummaryPreset shows both sides; the action mix is tested for drift.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from evidently.presets import DataSummaryPreset

from monitoring.drift_report import (
    DriftPart,
    column_drifts,
    definition,
    run,
    sample,
    save,
    share,
    skipped,
    value_drift,
)
from recsys.backends import open_catalog, open_lake
from recsys.events import INTERACTION_SCHEMA, context_from_json
from recsys.settings import Settings

NAME = "events"
STEM = "data_quality_events"
COLUMNS = ["user_id", "item_id", "event_time", "action_type", "value", "session_id", "context"]
FLAGS = ["user_known", "item_known", "has_session", "has_request_id", "missing_required"]


def model_data_end(settings: Settings) -> datetime | None:
    """The end of the data window of the candidate model in service, from its item index's meta."""
    models = settings.data_path / "models"
    current = models / "CURRENT"
    if not current.exists():
        return None
    meta = models / current.read_text().strip() / "item_index" / "meta.json"
    if not meta.exists():
        return None
    return pd.Timestamp(json.loads(meta.read_text())["data_end"]).to_pydatetime()


def read_events(settings: Settings, since: datetime | None) -> tuple[pd.DataFrame, pd.DataFrame, datetime] | None:
    """(reference, incoming, cutoff); None when the lake has no events."""
    lake = open_lake(settings)
    monitoring = settings.monitoring
    times = lake.interactions(columns=["event_time"]).column("event_time")
    if len(times) == 0:
        return None
    newest = pd.Timestamp(pc.max(times).as_py()).to_pydatetime()
    cutoff = since or model_data_end(settings) or newest - timedelta(hours=monitoring.drift_window_hours)
    bound = _at(cutoff)
    incoming = lake.interactions(filter=pc.field("event_time") > bound, columns=COLUMNS).to_pandas()
    if len(incoming) < monitoring.drift_min_rows:  # nothing to judge: the history is not read
        return incoming.iloc[:0], incoming, cutoff
    start = _at(cutoff - timedelta(days=monitoring.drift_reference_days))
    window = (pc.field("event_time") <= bound) & (pc.field("event_time") > start)
    reference = lake.interactions(filter=window, columns=COLUMNS).to_pandas()
    if len(reference) < monitoring.drift_min_rows:
        reference = lake.interactions(filter=pc.field("event_time") <= bound, columns=COLUMNS).to_pandas()
    return reference, incoming, cutoff


def _at(moment: datetime) -> pa.Scalar:
    return pa.scalar(pd.Timestamp(moment), type=INTERACTION_SCHEMA.field("event_time").type)


def quality_frame(events: pd.DataFrame, known_users: set[str], known_items: set[str]) -> pd.DataFrame:
    """One row per event: what is checked of it."""
    required = events[["user_id", "item_id", "event_time", "action_type"]].isna().any(axis=1)
    unrated = (events["action_type"] == "rate") & events["value"].isna()
    contexts = events["context"].map(lambda text: context_from_json(text) if isinstance(text, str) else {})
    return pd.DataFrame({
        "action_type": events["action_type"].astype(object),
        "value": events["value"].astype(float),
        "user_known": events["user_id"].isin(known_users),
        "item_known": events["item_id"].isin(known_items),
        "has_session": events["session_id"].notna() & (events["session_id"] != ""),
        "has_request_id": contexts.map(lambda c: bool(c.get("request_id"))),
        "missing_required": required | unrated,
    }).reset_index(drop=True)


def catalog_ids(settings: Settings, users: set[str]) -> tuple[set[str], set[str]]:
    """Which of `users` the catalog knows, and every item it knows."""
    with open_catalog(settings) as catalog:
        items = catalog.item_ids()
        known = {u for u in users if catalog.get_user(u) is not None}
    return known, items


def event_quality(settings: Settings, folder: Path, since: datetime | None = None) -> DriftPart:
    """Missing values, unknown ids and the action mix of incoming events, against the history before them."""
    monitoring = settings.monitoring
    found = read_events(settings, since)
    if found is None:
        return skipped(NAME, "the lake has no events")
    reference, incoming, cutoff = found
    if len(incoming) < monitoring.drift_min_rows:
        return skipped(NAME, f"{len(incoming):,} events after {cutoff:%Y-%m-%d %H:%M}, fewer than "
                             f"monitoring.drift_min_rows={monitoring.drift_min_rows}")
    if len(reference) < monitoring.drift_min_rows:
        return skipped(NAME, f"{len(reference):,} events up to {cutoff:%Y-%m-%d %H:%M}, fewer than "
                             f"monitoring.drift_min_rows={monitoring.drift_min_rows}")
    reference = sample(reference, monitoring.drift_max_rows)
    incoming = sample(incoming, monitoring.drift_max_rows)
    users, items = catalog_ids(settings, set(reference["user_id"].dropna()) | set(incoming["user_id"].dropna()))
    current, before = quality_frame(incoming, users, items), quality_frame(reference, users, items)
    snapshot = run([DataSummaryPreset(), value_drift("action_type", False, monitoring)], current, before,
                   definition(before, categorical=["action_type", *FLAGS]))
    drifts = column_drifts(snapshot)
    unknown_users = share(int((~current["user_known"]).sum()), len(current))
    unknown_items = share(int((~current["item_known"]).sum()), len(current))
    missing = share(int(current["missing_required"].sum()), len(current))
    problems = [f"action mix drifted ({_mix(current)} against {_mix(before)})" for c in drifts if c.drifted]
    if max(unknown_users, unknown_items) > monitoring.events_unknown_share_threshold:
        problems.append(f"unknown users {unknown_users:.1%}, items {unknown_items:.1%} (threshold "
                        f"{monitoring.events_unknown_share_threshold:.1%})")
    if missing > monitoring.events_missing_share_threshold:
        problems.append(f"{missing:.1%} miss a required value (threshold "
                        f"{monitoring.events_missing_share_threshold:.1%})")
    summary = f"{len(current):,} incoming events after {cutoff:%Y-%m-%d %H:%M} against {len(before):,} before"
    line = f"{NAME}: {summary}: " + ("; ".join(problems) if problems else "action mix, ids and values as before")
    metrics = {"drift_share_events": share(sum(c.drifted for c in drifts), len(drifts)),
               "unknown_user_share": unknown_users, "unknown_item_share": unknown_items,
               "missing_share": missing, "request_id_share": float(current["has_request_id"].mean()),
               "incoming_events": float(len(incoming))}
    return DriftPart(NAME, not problems, line, save(snapshot, folder, STEM), metrics, drifts)


def _mix(frame: pd.DataFrame, shown: int = 3) -> str:
    shares = frame["action_type"].value_counts(normalize=True).head(shown)
    return ", ".join(f"{action} {value:.0%}" for action, value in shares.items())
