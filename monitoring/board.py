"""The index page a team opens first: the newest verdict of every report, one line each, linked to its files.

`build(settings)` writes `settings.reports_path / "index.html"`: one row per report kind with an OK or ALERT
mark, the verdict's one line, when it ran and links to its files (relative, so the folder can be copied or
served as it is). The kinds every deployment runs (drift, quality, skew, experiments) have a row even before
their first run, marked "not run yet"; any other kind that wrote a verdict gets a row too. The page is one
self-contained file: inline CSS, no scripts, nothing fetched from elsewhere.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from monitoring.reports import VERDICTS, Verdict, latest_verdicts
from recsys.settings import Settings

INDEX = "index.html"
#: The reports every deployment runs, in the order the page lists them; `experiment` stands for every
#: `experiment_<name>` verdict.
EXPECTED = ("drift", "quality", "skew", "experiment")


@dataclass(frozen=True)
class Row:
    kind: str
    folder: Path | None  # the dated folder of the verdict; None when the kind has not run yet
    verdict: Verdict | None

    @property
    def status(self) -> str:
        if self.verdict is None:
            return "not run yet"
        return "OK" if self.verdict.ok else "ALERT"


@dataclass(frozen=True)
class Board:
    path: Path
    rows: list[Row]

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.rows)

    @property
    def ok(self) -> bool:
        """No report that ran is past its thresholds."""
        return self.count("ALERT") == 0

    def summary(self) -> str:
        return f"{self.count('OK')} OK, {self.count('ALERT')} ALERT, {self.count('not run yet')} not run yet"


def rows(settings: Settings) -> list[Row]:
    """One row per newest verdict, the expected kinds first (a placeholder row for those not run yet)."""
    found = latest_verdicts(settings)

    def family(kind: str) -> str:
        return next((name for name in EXPECTED if kind == name or kind.startswith(f"{name}_")), kind)

    def order(kind: str) -> tuple[int, str]:
        name = family(kind)
        return (EXPECTED.index(name) if name in EXPECTED else len(EXPECTED), kind)

    result = [Row(kind, folder, verdict) for kind, (folder, verdict) in found.items()]
    ran = {family(kind) for kind in found}
    result += [Row(name, None, None) for name in EXPECTED if name not in ran]
    return sorted(result, key=lambda row: order(row.kind))


def build(settings: Settings, now: datetime | None = None) -> Board:
    """Write the index page of `settings.reports_path` (atomically) and return what it shows."""
    root = settings.reports_path
    root.mkdir(parents=True, exist_ok=True)
    board = Board(root / INDEX, rows(settings))
    temporary = board.path.with_name(f".{INDEX}.tmp")
    temporary.write_text(render(board, root, now or datetime.now(UTC)), encoding="utf-8")
    temporary.replace(board.path)
    return board


def render(board: Board, root: Path, now: datetime) -> str:
    """The page's HTML."""
    status, status_class = ("ALERT", "alert") if not board.ok else ("OK", "ok") if board.count("OK") else \
        ("NO REPORTS YET", "none")
    body = "\n".join(_row_html(row, root, now) for row in board.rows)
    return _PAGE.format(
        css=_CSS, status=status, status_class=status_class, summary=html.escape(board.summary()),
        generated=html.escape(now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        root=html.escape(str(root)), rows=body,
    )


def _row_html(row: Row, root: Path, now: datetime) -> str:
    if row.verdict is None or row.folder is None:
        return (f'<tr class="none"><td><span class="mark none">NOT RUN</span></td><td class="kind">'
                f'{html.escape(row.kind)}</td><td class="line">not run yet</td><td></td><td></td></tr>')
    verdict, folder = row.verdict, row.folder
    mark = "ok" if verdict.ok else "alert"
    files = [*verdict.files, f"{VERDICTS}/{verdict.kind}.json"]
    links = " ".join(_link(root, folder / name, name) for name in files)
    metrics = ", ".join(f"{html.escape(k)} {_number(v)}" for k, v in sorted(verdict.metrics.items()))
    return (f'<tr class="{mark}"><td><span class="mark {mark}">{"OK" if verdict.ok else "ALERT"}</span></td>'
            f'<td class="kind">{html.escape(verdict.kind)}</td>'
            f'<td class="line">{html.escape(verdict.line)}<div class="metrics">{metrics}</div></td>'
            f'<td class="when">{_when(verdict.created_at, now)}</td>'
            f'<td class="files">{links}</td></tr>')


def _link(root: Path, target: Path, name: str) -> str:
    if not target.exists():
        return f'<span class="missing" title="file not found">{html.escape(name)} (missing)</span>'
    href = quote(Path(os.path.relpath(target, root)).as_posix())
    return f'<a href="{html.escape(href)}">{html.escape(name)}</a>'


def _when(created_at: str, now: datetime) -> str:
    """When the report ran, in UTC, and how old it is once that is a day or more."""
    ran = datetime.fromisoformat(created_at)
    ran = ran if ran.tzinfo else ran.replace(tzinfo=UTC)
    days = (now - ran).days
    age = f'<div class="age">{days} day{"s" if days > 1 else ""} old</div>' if days >= 1 else ""
    return html.escape(ran.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")) + age


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a;
       margin: 0; background: #f5f6f8; }
header { padding: 20px 32px; background: #fff; border-bottom: 1px solid #dde1e6; }
h1 { font-size: 22px; margin: 0 0 4px; }
.sub { color: #5b6570; font-size: 13px; }
main { padding: 20px 32px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #dde1e6; }
th, td { text-align: left; vertical-align: top; padding: 10px 12px; border-bottom: 1px solid #eceff2; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #5b6570; background: #fafbfc; }
.kind { font-weight: 600; white-space: nowrap; }
.when { white-space: nowrap; color: #5b6570; font-size: 13px; }
.metrics { color: #5b6570; font-size: 12px; margin-top: 3px; }
.files a, .files .missing { display: inline-block; margin: 0 8px 2px 0; font-size: 13px; }
.missing { color: #a33; }
a { color: #0b5cad; }
.age { color: #a15c00; font-size: 12px; }
.mark { display: inline-block; white-space: nowrap; min-width: 56px; text-align: center; padding: 2px 8px;
        border-radius: 4px; font-weight: 700; font-size: 12px; letter-spacing: .04em; }
.mark.ok { background: #dff3e4; color: #1a6b32; }
.mark.alert { background: #fbe0e0; color: #a11d1d; }
.mark.none { background: #eceff2; color: #5b6570; }
tr.none .line { color: #8a939c; font-style: italic; }
.overall { margin-right: 10px; vertical-align: 3px; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Recommendation monitoring: {status}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1><span class="mark {status_class} overall">{status}</span>Recommendation monitoring</h1>
<div class="sub">{summary} &middot; newest report of each kind &middot; built {generated} &middot; {root}</div>
</header>
<main>
<table>
<thead><tr><th>Status</th><th>Report</th><th>Verdict</th><th>Ran at</th><th>Files</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</main>
</body>
</html>
"""
