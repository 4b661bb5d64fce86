"""`recsys runs`: the training runs recorded in experiment tracking (MLflow), to compare them here without a UI."""

from __future__ import annotations

import math

import typer
from rich.table import Table

from cli.app import app, out, state

STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
         "th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}th{background:#f6f6f6}")


@app.command("runs")
def runs(
    kind: str | None = typer.Option(None, help="only this model: two-tower or ranker"),
    limit: int = typer.Option(20, min=1, help="newest runs listed"),
    html: bool = typer.Option(False, help="also write every listed run's metrics and parameters side by side to "
                              "data_dir/runs/index.html"),
) -> None:
    """Training runs recorded in experiment tracking, newest first: model, version, data window, metrics."""
    from training.tracking import runs_frame

    settings = state.settings
    frame = runs_frame(settings, kind, limit)
    out.print(f"{len(frame)} run(s) in {settings.tracking_uri} (experiment {settings.tracking.experiment})")
    if frame.empty:
        return
    table = Table("run", "started (UTC)", "model", "version", "data end", "metrics")
    metric_columns = [c for c in frame.columns if c.startswith("metrics.")]
    for values in frame.to_dict("records"):
        shown = ", ".join(f"{c.removeprefix('metrics.')} {values[c]:.4g}" for c in metric_columns
                          if isinstance(values[c], float) and not math.isnan(values[c]))
        table.add_row(values["run_id"][:8], f"{values['started']:%Y-%m-%d %H:%M}", values["kind"] or "",
                      values["version"] or "", (values["data_end"] or "")[:10], shown)
    out.print(table)
    if html:
        page = settings.data_path / "runs" / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        table_html = frame.set_index("run_id").T.to_html(na_rep="", border=0)
        page.write_text(f"<!doctype html><meta charset='utf-8'><title>Training runs</title><style>{STYLE}</style>"
                        f"<h1>Training runs</h1><p>{settings.tracking_uri}, experiment "
                        f"{settings.tracking.experiment}: one column per run, newest first</p>{table_html}")
        out.print(f"runs side by side -> {page}")
