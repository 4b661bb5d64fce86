"""The serving-latency results as a markdown table and a plot of p99 against rate per path (targets marked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Issue 13's targets: path -> (rate per second, p99 milliseconds).
TARGETS = {"full": (100, 50.0), "cached": (500, 5.0), "interactions": (500, 10.0)}


def summary_line(path: str, run: dict[str, Any]) -> str:
    shares = (f"degraded {100 * run['degraded_share']:.1f}% {run['rungs']} cached {100 * run['cached_share']:.0f}%"
              if "rungs" in run else f"answers {run.get('answers')}")
    return (f"{path:12s} {run['rate']:>5g}/s: answered {run['rps']}/s (sent {run['sent_rps']}/s, lag "
            f"{run['send_lag_ms']} ms) p50 {run['p50_ms']} p95 {run['p95_ms']} p99 {run['p99_ms']} max "
            f"{run['max_ms']} ms; errors {run['errors']} statuses {run['statuses']}; {shares}; stages "
            f"{ {k: v['mean_ms'] for k, v in run['stages'].items()} }")


# -- reports --------------------------------------------------------------------------------------------------
def markdown(runs: dict[str, Any]) -> str:
    lines = ["| run | path | offered | answered | p50 ms | p95 ms | p99 ms | max ms | degraded | rungs | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, run in runs.items():
        for path, figures in run.get("paths", {}).items():
            for rate, r in figures.get("rates", {}).items():
                degraded = f"{100 * r['degraded_share']:.1f}%" if "degraded_share" in r else "-"
                rungs = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r.get("rungs", {}).items()) or (
                    f"accepted {100 * r['accepted_of_sent']:.0f}%" if "accepted_of_sent" in r else "-")
                lines.append(f"| {key} | {path} | {rate}/s | {r['rps']}/s | {r['p50_ms']} | {r['p95_ms']} | "
                             f"{r['p99_ms']} | {r['max_ms']} | {degraded} | {rungs} | {r['errors']} |")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, Any], target: Path) -> None:
    """p99 against the offered rate, one line per (run, path); the issue's targets as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for key, run in runs.items():
        for path, figures in run.get("paths", {}).items():
            points = sorted((float(rate), r["p99_ms"]) for rate, r in figures.get("rates", {}).items())
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=f"{path} ({key})")
    for path, (rate, p99) in TARGETS.items():
        ax.scatter([rate], [p99], marker="_", s=400, color="black", zorder=5)
        ax.annotate(f"target {path}", (rate, p99), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.set(xlabel="offered rate (requests/s, open loop)", ylabel="p99 latency (ms, from scheduled send)",
           yscale="log", title="Serving latency: p99 against offered rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------------------------
