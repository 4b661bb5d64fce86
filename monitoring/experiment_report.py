"""`recsys experiment report NAME`: the analysis of `monitoring.experiments` as `experiment_<NAME>.json`, a
self-contained `experiment_<NAME>.html` (plots embedded as base64 PNG) and the verdict `experiment_<NAME>`."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure  # a Figure of its own, not pyplot: no global state, no display backend

from monitoring import attribution
from monitoring.experiments import METRICS, ExperimentResult, analyze, headline
from monitoring.reports import Verdict, report_dir, write_verdict
from recsys.settings import Settings

METHOD = ("Each rate is a ratio of sums over users (CTR: clicked impressions / impressions; conversion: answers "
          "followed within the session by a purchase or a rating of 4 or more of one of their items / answers; "
          "MRR: mean over answers of 1 / rank of the first clicked item, 0 without a click). Users are what the "
          "assignment randomises and one user's impressions are correlated, so intervals and tests use the delta "
          "method over per-user sums (a Wald z-test of the difference; the user-level bootstrap's answer without "
          "resampling), not an impression-level two-proportion test, whose binomial error would be too small and "
          "call noise significant. The sample-ratio check is Pearson's chi-square of users per arm against the "
          "shares of buckets each arm owns.")
LABELS = {"ctr": "CTR (clicked impressions / impressions)", "conversion": "conversion (per answer)",
          "mrr": "MRR of clicks (per answer)"}


def report(settings: Settings, name: str, since: datetime | None = None, until: datetime | None = None,
           served: attribution.Served | None = None) -> tuple[Path, Verdict]:
    """Analyse experiment `name` over the serving log between `since` and `until`; write the files and verdict."""
    served = served if served is not None else attribution.load(settings, since, until)
    result = analyze(served, settings, name)
    folder = report_dir(settings)
    stem = f"experiment_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
    data = result.to_json()
    _atomic(folder / f"{stem}.json", json.dumps(data, indent=2, default=str))
    _atomic(folder / f"{stem}.html", render(result))
    metrics: dict[str, float] = {"srm_p_value": result.ratio_check.p_value}
    for variant, compared in result.comparisons.items():
        for metric in METRICS:
            metrics[f"{variant}_{metric}_relative"] = compared[metric]["relative"]
            metrics[f"{variant}_{metric}_p_value"] = compared[metric]["p_value"]
    for arm, row in result.arms.items():
        metrics[f"{arm}_users"] = float(row["users"])
        metrics[f"{arm}_ctr"] = row["ctr"]["value"]
    verdict = Verdict(kind=stem, ok=result.ok, line=headline(result), files=[f"{stem}.html", f"{stem}.json"],
                      metrics={k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)})
    write_verdict(folder, verdict)
    return folder, verdict


def render(result: ExperimentResult) -> str:
    """The report as one HTML page: tables, then the plots inline."""
    plots = [("Rates per arm with 95% intervals", metric_plot), ("CTR per day and cumulative CTR", ctr_over_time),
             ("Answer latency per arm (serving log)", latency_plot)]
    figures = "".join(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,"
                      f"{_png(draw, result)}'>" for title, draw in plots)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>experiment {html.escape(result.name)}</title>"
            f"<style>{_CSS}</style></head><body><h1>Experiment {html.escape(result.name)}</h1>"
            f"<p class='{'ok' if result.ok else 'bad'}'>{html.escape(headline(result))}</p>"
            f"<p>Window: {html.escape(str(result.window['since']))} to {html.escape(str(result.window['until']))}; "
            f"users who crossed to another arm (left out after their first): {result.crossover_users}</p>"
            f"<h2>Arms</h2>{_arms_table(result)}<h2>Each variant against control</h2>{_comparison_table(result)}"
            f"<h2>Sample-ratio check</h2>{_ratio_table(result)}<h2>Guardrails</h2>{_guardrail_table(result)}"
            f"{figures}<h2>How to read it</h2><p>{html.escape(METHOD)}</p>"
            + "".join(f"<p>{html.escape(note)}</p>" for note in result.notes) + "</body></html>")


def metric_plot(result: ExperimentResult, figure: Figure) -> None:
    arms = list(result.arms)
    for k, metric in enumerate(METRICS):
        axes = figure.add_subplot(1, len(METRICS), k + 1)
        for x, arm in enumerate(arms):
            row = result.arms[arm][metric]
            value = _nan(row["value"])
            axes.errorbar([x], [value], yerr=[[value - _nan(row["low"])], [_nan(row["high"]) - value]], fmt="o",
                          capsize=6, color=_colour(result, arm))
        axes.set_xticks(range(len(arms)), arms)
        axes.set_xlim(-0.5, len(arms) - 0.5)
        axes.set_title(LABELS[metric], fontsize=9)
    figure.set_size_inches(12, 3.6)


def ctr_over_time(result: ExperimentResult, figure: Figure) -> None:
    daily, cumulative = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    days = pd.DataFrame(result.daily, columns=["day", "arm", "impressions", "clicked", "ctr"])
    for arm, frame in days.groupby("arm"):
        daily.plot(frame["day"], frame["ctr"], marker="o", label=str(arm), color=_colour(result, str(arm)))
    daily.set_title("CTR per serving day", fontsize=9)
    for arm, points in result.cumulative.items():
        if points:
            times = pd.to_datetime([t for t, _ in points], format="ISO8601")
            cumulative.plot(times, [v for _, v in points], label=arm, color=_colour(result, arm))
    cumulative.set_title("cumulative CTR (impressions in serving order)", fontsize=9)
    cumulative.tick_params(axis="x", labelrotation=30, labelsize=7)
    for axes in (daily, cumulative):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    figure.set_size_inches(12, 3.8)


def latency_plot(result: ExperimentResult, figure: Figure) -> None:
    axes = figure.add_subplot(1, 1, 1)
    for arm, quantiles in result.latency_quantiles.items():
        axes.plot(quantiles, range(len(quantiles)), label=f"{arm} (p99 {result.guardrails[arm].p99_latency_ms:.0f} ms)",
                  color=_colour(result, arm))
    axes.axvline(result.settings["p99_latency_ms"], color="red", linestyle="--", label="p99 ceiling")
    axes.axhline(99, color="grey", linestyle=":")
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("percentile of answers")
    axes.legend(fontsize=8)
    figure.set_size_inches(8, 3.6)


def _colour(result: ExperimentResult, arm: str) -> str:
    """One colour per arm across the plots."""
    return f"C{list(result.arms).index(arm) % 10}"


def _png(draw: Callable[[ExperimentResult, Figure], None], result: ExperimentResult) -> str:
    figure = Figure()
    draw(result, figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _arms_table(result: ExperimentResult) -> str:
    head = ["arm", "users", "expected share", "observed share", "requests", "impressions", *LABELS.values()]
    rows = [[arm, r["users"], f"{r['expected_share']:.1%}", f"{r['observed_share']:.1%}", r["requests"],
             r["impressions"], *(_interval(r[m]) for m in METRICS)] for arm, r in result.arms.items()]
    return _table(head, rows)


def _comparison_table(result: ExperimentResult) -> str:
    head = ["variant", "metric", "difference [95% CI]", "relative [95% CI]", "z", "p", "significant"]
    rows = [[variant, metric, f"{_f(d['diff'])} [{_f(d['low'])}, {_f(d['high'])}]",
             f"{_pct(d['relative'])} [{_pct(d['relative_low'])}, {_pct(d['relative_high'])}]", _f(d["z"], 2),
             f"{_nan(d['p_value']):.3g}", "yes" if d["significant"] else "no"]
            for variant, metrics in result.comparisons.items() for metric, d in metrics.items()]
    return _table(head, rows)


def _ratio_table(result: ExperimentResult) -> str:
    check = result.ratio_check
    rows: list[list[Any]] = [[arm, check.observed[arm], f"{check.expected[arm]:.1f}"] for arm in check.expected]
    verdict = "MISMATCH: the assignment or the logging is broken" if check.mismatch else "ok"
    return _table(["arm", "users", "expected"], rows) + (
        f"<p>chi-square {_f(check.chi2, 2)}, p = {_nan(check.p_value):.3g} (flagged below "
        f"{result.settings['srm_alpha']}): {verdict}</p>")


def _guardrail_table(result: ExperimentResult) -> str:
    rows = [[arm, g.requests, f"{_nan(g.p99_latency_ms):.1f}", f"{_nan(g.degradation_share):.1%}",
             "; ".join(g.broken) or "ok"] for arm, g in result.guardrails.items()]
    return _table(["arm", "answers", "p99 latency (ms)", "degraded answers", "status"], rows) + (
        f"<p>Ceiling p99 {result.settings['p99_latency_ms']:.0f} ms per arm; a variant's degraded share may exceed "
        f"control's by {result.settings['degradation_margin']:.1%} (cold start is not a degradation).</p>")


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{cells}</table>"


def _interval(estimate: dict[str, Any]) -> str:
    return f"{_f(estimate['value'])} [{_f(estimate['low'])}, {_f(estimate['high'])}]"


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _f(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.1%}"


def _atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
        ".ok{color:#1a7f37;font-weight:bold}.bad{color:#cf222e;font-weight:bold}img{max-width:100%}")
