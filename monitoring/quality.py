"""Ranking quality (`recsys monitor quality`): Evidently's recsys metrics on what was served and on what is next.

* Online (`quality_online.html`/`.json`, and one Evidently report per group, `quality_online_<group>.html`):
  the lists served in the window (the serving log) against what users did with them (the events attributed
  to their impressions, `monitoring.attribution`), per group of answers: variant and model version. Each
  group's report shows it beside the most served group (Evidently's reference column).
* Offline (`quality_offline.html`/`.json`): the newest ranker in the model store beside the one that served
  most answers, on the same held-out interactions (`monitoring.quality_offline`): Evidently's current column is
  the newest version, its reference column the version in service.

An item's relevance is the largest weight among the events attributed to its impression, the weights of
feature engineering (`ingestion.features.engineering.ACTION_WEIGHTS`: view 1, click and tag 2, add to cart,
like and share 3, purchase 5, skip 0; a rating of r stars r/5 x 4): NDCG is graded by it, while MRR, hit
rate, MAP, precision and recall count an item as relevant when it is above 0. Offline, relevance is binary
(the user took the item in their held-out part).

The verdict fails when a judged group's online NDCG@k is more than `monitoring.quality_max_drop` below the
most served group's (judged: at least `quality_min_lists` lists with a click; holdout arms, which shuffle on
purpose, and popular or cold-start lists are shown, not judged), or when the newest ranker's offline NDCG@k is
that far below the serving ranker's.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.features.engineering import ACTION_WEIGHTS, RATE_WITHOUT_VALUE
from monitoring import attribution, quality_offline
from monitoring.recsys_metrics import headline, run
from monitoring.reports import Verdict, report_dir, write_verdict
from monitoring.window import report_window
from recsys import serving_log
from recsys.backends import open_lake
from recsys.events import INTERACTION_SCHEMA
from recsys.settings import Settings
from training.evaluation import positives

GROUP = ("variant", "model_version")
UNJUDGED_VERSIONS = {"popular"}  # the popular floor and cold-start lists: not a ranker's work


@dataclass
class Section:
    """One half of the report: whether it is within thresholds, what it says, its files and numbers."""

    ok: bool
    line: str
    files: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


# -- online ----------------------------------------------------------------------------------------------
def relevance(events: pd.DataFrame) -> pd.DataFrame:
    """(request_id, item_id, target): the largest action weight among each impression's attributed events."""
    found = events.dropna(subset=["request_id"])
    if found.empty:
        return pd.DataFrame({"request_id": pd.Series(dtype=str), "item_id": pd.Series(dtype=str),
                             "target": pd.Series(dtype=float)})
    weight = found["action_type"].map(ACTION_WEIGHTS).astype("float64")
    rated = found["action_type"] == "rate"
    weight[rated] = (found.loc[rated, "value"] / 5.0 * 4.0).fillna(RATE_WITHOUT_VALUE)
    return (found.assign(target=weight.fillna(0.0)).groupby(["request_id", "item_id"], as_index=False)["target"]
            .max())


def online_lists(served: attribution.Served) -> pd.DataFrame:
    """The served lists frame (`recsys_metrics.LIST_COLUMNS`, `list_id` = request id) with each list's group."""
    shown = served.impressions
    frame = shown.assign(list_id=shown["request_id"]).merge(relevance(served.events), how="left",
                                                             on=["request_id", "item_id"])
    frame["target"] = frame["target"].fillna(0.0)
    frame["score"] = frame["score"].fillna(0.0)
    return frame[["list_id", "user_id", "item_id", "rank", "score", "target", *GROUP]]


def histories(settings: Settings, users: set[str], before: datetime, per_user: int) -> pd.DataFrame:
    """(user_id, item_id): each user's latest `per_user` positives before `before`."""
    kind = INTERACTION_SCHEMA.field("event_time").type
    condition = (pc.field("event_time") < pa.scalar(pd.Timestamp(before), type=kind)) & pc.field("user_id").isin(
        sorted(users))
    table = open_lake(settings).interactions(filter=condition,
                                             columns=["user_id", "item_id", "event_time", "action_type", "value"])
    found = positives(table)
    return found.groupby("user_id", sort=False).tail(per_user)[["user_id", "item_id"]]


def training_frame(lists: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Each list's user's history, under the list's id: what Evidently compares each list with."""
    owners = lists[["list_id", "user_id"]].drop_duplicates()
    return owners.merge(history, on="user_id")[["list_id", "user_id", "item_id"]]


def online_section(settings: Settings, folder: Path, since: datetime, until: datetime,
                   items: pd.DataFrame | None) -> tuple[Section, dict[str, Any]]:
    config = settings.monitoring
    k = config.quality_k
    lists = online_lists(attribution.load(settings, since, until))
    if lists.empty:
        return Section(True, "online: nothing served in the window"), {"groups": []}
    lists = _sampled(lists, config.quality_max_lists)
    train = training_frame(lists, histories(settings, set(lists["user_id"]), since, config.quality_history_items))
    sizes = lists.groupby(list(GROUP))["list_id"].nunique().sort_values(ascending=False, kind="stable")
    reference_key = sizes.index[0]
    reference = lists[(lists[list(GROUP)] == pd.Series(reference_key, index=list(GROUP))).all(axis=1)]
    holdouts = {v.name for v in settings.serving.experiments if v.shuffle}
    groups, files = [], []
    for key in sizes.index:
        part = lists[(lists[list(GROUP)] == pd.Series(key, index=list(GROUP))).all(axis=1)]
        clicked = int(part.loc[part["target"] > 0, "list_id"].nunique())
        entry: dict[str, Any] = {"variant": key[0], "model_version": key[1], "lists": int(part["list_id"].nunique()),
                                 "clicked_lists": clicked, "metrics": {}, "file": None,
                                 "judged": bool(clicked >= config.quality_min_lists and key[0] not in holdouts
                                                and key[1] not in UNJUDGED_VERSIONS)}
        if clicked:
            name = f"quality_online_{_slug(key)}"
            others = reference if key != reference_key and (reference["target"] > 0).any() else None
            measured = run(part, others, train[train["list_id"].isin(set(part["list_id"]))], items, k,
                           f"online quality: {key[0]} / {key[1]}")
            measured.snapshot.save_html(str(folder / f"{name}.html"))
            entry["metrics"] = {m: v["current"] for m, v in headline(measured, k).items()}
            entry["left_out"] = measured.left_out
            entry["file"] = f"{name}.html"
            files.append(f"{name}.html")
        groups.append(entry)
    section = _judge_online(groups, groups[0], k, config.quality_max_drop)
    section.files = ["quality_online.html", "quality_online.json", *files]
    return section, {"k": k, "reference_group": {"variant": reference_key[0], "model_version": reference_key[1]},
                     "groups": groups}


def _judge_online(groups: list[dict[str, Any]], reference: dict[str, Any], k: int, max_drop: float) -> Section:
    ndcg = f"ndcg@{k}"
    base = reference["metrics"].get(ndcg)
    worse = [g for g in groups[1:] if g["judged"] and reference["judged"] and base is not None
             and g["metrics"].get(ndcg) is not None and g["metrics"][ndcg] < (1 - max_drop) * base]
    shown = ", ".join(f"{g['variant']}/{g['model_version']} {g['metrics'][ndcg]:.3f}" for g in groups
                      if g["metrics"].get(ndcg) is not None)
    line = f"online NDCG@{k}: {shown or 'no list got a click'}"
    if worse:
        line += f"; {', '.join(g['variant'] + '/' + g['model_version'] for g in worse)} more than " \
                f"{max_drop:.0%} below {reference['variant']}/{reference['model_version']}"
    metrics = {f"online_{name}": value for name, value in reference["metrics"].items() if value is not None}
    metrics["online_groups_below"] = float(len(worse))
    return Section(not worse, line, metrics=metrics)


# -- offline ---------------------------------------------------------------------------------------------
def offline_section(settings: Settings, folder: Path, log: pd.DataFrame, items: pd.DataFrame | None,
                    home: Path | None = None) -> tuple[Section, dict[str, Any]]:
    config = settings.monitoring
    k = config.quality_k
    versions = quality_offline.ranker_versions(home)
    if not versions:
        return Section(True, "offline: no ranker in the model store"), {}
    newest = versions[0]
    serving = quality_offline.serving_version(log, versions) or newest
    try:
        held = quality_offline.holdout(settings.lake_path, config.quality_offline_users)
        lists = quality_offline.ranked_lists(settings, held, list(dict.fromkeys([newest, serving])), k, home)
    except quality_offline.NothingToCompareError as error:
        return Section(True, f"offline: {error.message}"), {}
    train = training_frame(lists[newest], held.history.groupby("user_id").tail(config.quality_history_items))
    reference = lists[serving] if serving != newest else None
    measured = run(lists[newest], reference, train, items, k,
                   f"offline quality: {newest} (current) vs {serving} in service (reference)")
    measured.snapshot.save_html(str(folder / "quality_offline.html"))
    numbers = headline(measured, k)
    ndcg = numbers.get(f"ndcg@{k}", {})
    new, old = ndcg.get("current"), ndcg.get("reference")
    worse = new is not None and old is not None and new < (1 - config.quality_max_drop) * old
    users = f"{len(held.relevant)} held-out users"
    if reference is None:
        line = f"offline ({users}): {newest} is the ranker in service, NDCG@{k} {_fmt(new)}"
    else:
        line = (f"offline ({users}): newest ranker {newest} NDCG@{k} {_fmt(new)} vs {_fmt(old)} for {serving} in "
                f"service" + (f", more than {config.quality_max_drop:.0%} worse" if worse else ""))
    summary = {"k": k, "split": "each user's latest 20% of positives (training.evaluation.split_for)",
               "users": len(held.relevant), "newest": newest,
               "serving": serving, "metrics": {m: {"newest": v["current"], "serving": v["reference"]
                                                   if reference is not None else v["current"]}
                                               for m, v in numbers.items()},
               "left_out": measured.left_out, "evidently": measured.snapshot.dict()}
    (folder / "quality_offline.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    flat = {f"offline_{m}_newest": v["current"] for m, v in numbers.items() if v["current"] is not None}
    flat.update({f"offline_{m}_serving": v["reference"] for m, v in numbers.items() if v["reference"] is not None})
    return Section(not worse, line, ["quality_offline.html", "quality_offline.json"], flat), summary


# -- the report --------------------------------------------------------------------------------------------
def quality_report(settings: Settings, since: datetime | None = None, until: datetime | None = None,
                   offline: bool = True, home: Path | None = None) -> tuple[Path, Verdict]:
    """Write the online and (with `offline`) the offline report in today's folder; their verdict."""
    folder = report_dir(settings)
    since, until = report_window(settings, since, until)
    items = open_lake(settings).latest_snapshot("items")
    details: dict[str, Any]
    if since is None or until is None:
        online, details = Section(True, "online: the serving log is empty"), {"groups": []}
        log = pd.DataFrame()
    else:
        online, details = online_section(settings, folder, since, until, items)
        log = serving_log.read(settings.lake_path, since, until, columns=["model_version"])
    details.update({"since": _iso(since), "until": _iso(until), "ok": online.ok, "line": online.line})
    (folder / "quality_online.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    (folder / "quality_online.html").write_text(_overview_html(details))
    online.files = online.files or ["quality_online.html", "quality_online.json"]
    sections = [online]
    if offline:
        sections.append(offline_section(settings, folder, log, items, home)[0])
    verdict = Verdict("quality", all(s.ok for s in sections), "; ".join(s.line for s in sections),
                      [f for s in sections for f in s.files], {k: v for s in sections for k, v in s.metrics.items()})
    write_verdict(folder, verdict)
    return folder, verdict


def _sampled(lists: pd.DataFrame, most: int) -> pd.DataFrame:
    """At most `most` lists per group, a seeded sample."""
    ids = lists.drop_duplicates("list_id")[["list_id", *GROUP]]
    kept = ids.groupby(list(GROUP), group_keys=False).apply(
        lambda g: g.sample(n=min(len(g), most), random_state=0), include_groups=False)
    return lists[lists["list_id"].isin(set(ids.loc[kept.index, "list_id"]))]


def _slug(key: tuple[str, str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(part) for part in key)).strip("-")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else pd.Timestamp(value).isoformat()


def _overview_html(details: dict[str, Any]) -> str:
    """The online page: one row per group with its headline metrics and a link to its Evidently report."""
    groups = details.get("groups", [])
    names = sorted({m for g in groups for m in g["metrics"]}, key=lambda m: (not m.endswith(f"@{details.get('k')}"), m))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["variant", "model version", "lists", "lists with a click",
                                                           "judged", *names, "report"])
    rows = []
    for g in groups:
        cells = [g["variant"], g["model_version"], g["lists"], g["clicked_lists"], "yes" if g["judged"] else "no"]
        cells += [_fmt(g["metrics"].get(m)) if g["metrics"].get(m) is not None else "" for m in names]
        link = f'<a href="{html.escape(g["file"])}">Evidently report</a>' if g["file"] else "no clicks"
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + f"<td>{link}</td></tr>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}")
    reference = details.get("reference_group") or {}
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Online ranking quality</title>"
            f"<style>{style}</style></head><body><h1>Online ranking quality</h1>"
            f"<p>{html.escape(str(details.get('line', '')))}</p>"
            f"<p>Window {html.escape(str(details.get('since')))} to {html.escape(str(details.get('until')))}; "
            f"metrics at k = {details.get('k', '')}, Evidently's recsys metrics on the served lists against the "
            f"events attributed to them; each group's report shows it beside the most served group "
            f"({html.escape(str(reference.get('variant', '')))} / "
            f"{html.escape(str(reference.get('model_version', '')))}).</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table></body></html>\n")
