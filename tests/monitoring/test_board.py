"""The index page (`recsys monitor build`) and the screenshots of HTML reports in headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from monitoring.board import build
from monitoring.reports import Verdict, report_dir, write_verdict
from recsys.settings import ROOT_DIR, Settings
from tests.conftest import make_settings
from tests.monitoring.screenshots import ARTIFACTS, BrokenPage, screenshot, screenshot_reports

SHOTS = ARTIFACTS / "screenshots" / "monitoring"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.fetched: list[str] = []  # anything the page would load: scripts, styles, images

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
        if tag in {"script", "img", "link", "iframe"} and (found.get("src") or found.get("href")):
            self.fetched.append(str(found.get("src") or found.get("href")))


def _reports(settings: Settings) -> None:
    """Two days of reports: yesterday's drift was fine, today's is not; the embedding drift ran yesterday only;
    quality lost a file; one experiment."""
    now = datetime.now(UTC)
    yesterday = report_dir(settings, now - timedelta(days=1))
    (yesterday / "drift_features.html").write_text("<html><body>old drift</body></html>")
    write_verdict(yesterday, Verdict("drift", True, "no drift: 0 of 12 features drifted", ["drift_features.html"],
                                     created_at=(now - timedelta(days=1)).isoformat(timespec="seconds")))
    write_verdict(yesterday, Verdict("drift_embeddings", True, "embeddings: cosine shift 0.02 from v3 to v4",
                                     created_at=(now - timedelta(days=1, hours=2)).isoformat(timespec="seconds")))
    today = report_dir(settings, now)
    for name in ("drift_features.html", "drift_features.json", "experiment_ranker v2.html"):
        (today / name).write_text("<html><body>report</body></html>")
    write_verdict(today, Verdict("drift", False, "drift: 5 of 12 features drifted (share 0.42 > 0.30)",
                                 ["drift_features.html", "drift_features.json"], {"drift_share": 0.4167}))
    write_verdict(today, Verdict("quality", True, "NDCG@10 0.171 online, in line with offline",
                                 ["quality.html"], {"ndcg_at_10": 0.171}))
    write_verdict(today, Verdict("experiment_ranker v2", True, "variant b: CTR +8.1% (p = 0.003), no SRM",
                                 ["experiment_ranker v2.html"]))


def test_the_index_links_the_newest_report_of_each_kind(tmp_path: Path) -> None:
    settings = make_settings("local", tmp_path)
    _reports(settings)

    board = build(settings)

    assert [(row.kind, row.status) for row in board.rows] == [
        ("drift", "ALERT"), ("drift_embeddings", "OK"), ("quality", "OK"), ("skew", "not run yet"),
        ("experiment_ranker v2", "OK")]
    assert not board.ok and board.summary() == "3 OK, 1 ALERT, 1 not run yet"
    page = board.path.read_text()
    assert board.path == settings.reports_path / "index.html"
    assert "drift: 5 of 12 features drifted" in page and "no drift" not in page  # the newest drift only
    links = _Links()
    links.feed(page)
    assert links.fetched == [], "the page loads nothing: inline CSS only"
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    targets = {unquote(href) for href in links.hrefs}
    assert f"{today}/drift_features.html" in targets and f"{today}/experiment_ranker v2.html" in targets
    assert f"{today}/verdicts/drift.json" in targets
    for href in targets:
        assert (settings.reports_path / href).is_file(), f"{href} links nowhere"
    assert "quality.html (missing)" in page  # a file the verdict names but the folder lacks is not a link

    shot = screenshot(board.path, SHOTS / "index.png")
    assert shot.png.stat().st_size > 10_000
    assert shot.title == "Recommendation monitoring: ALERT"
    for seen in ("ALERT", "NOT RUN", "skew", "not run yet", "variant b: CTR +8.1%", "drift_share 0.4167",
                 "1 day old"):
        assert seen in shot.text


def test_before_any_report_every_kind_is_not_run_yet(tmp_path: Path) -> None:
    board = build(make_settings("local", tmp_path))
    assert [(row.kind, row.status) for row in board.rows] == [
        ("drift", "not run yet"), ("quality", "not run yet"), ("skew", "not run yet"), ("experiment", "not run yet")]
    shot = screenshot(board.path, SHOTS / "index_empty.png")
    assert "NO REPORTS YET" in shot.text and shot.text.count("not run yet") == 5  # the summary and 4 rows


def _recsys(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "RECSYS_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "cli", "monitor", "build", *args], env=environ, cwd=ROOT_DIR,
                          capture_output=True, text=True, timeout=300)


def test_recsys_monitor_build_names_the_page_and_fails_on_alert_when_asked(tmp_path: Path) -> None:
    settings = make_settings("local", tmp_path)
    clean = _recsys(settings.data_path)
    assert clean.returncode == 0, clean.stderr
    assert "index: 0 OK, 0 ALERT, 4 not run yet" in clean.stdout
    assert str(settings.reports_path / "index.html") in clean.stdout.replace("\n", "")

    _reports(settings)
    assert _recsys(settings.data_path).returncode == 0  # the page is written; alerts are on it
    strict = _recsys(settings.data_path, "--fail-on-alert")
    assert strict.returncode == 1 and "1 ALERT" in strict.stdout


BROKEN = {
    "empty": ("<html><body><div></div></body></html>", "empty page"),
    "script_error": ("<html><body><p>hello</p><script>undefinedFunction()</script></body></html>",
                     "JavaScript error"),
    "console_error": ("<html><body><p>hello</p><script>console.error('no data')</script></body></html>",
                      "console error: no data"),
    "missing_image": ("<html><body><p>hello</p><img src='plot.png'></body></html>", "resource failed"),
    "outside_script": ("<html><body><p>hello</p><script src='https://cdn.example.com/lib.js'></script></body></html>",
                       "fetches from outside"),
    "rendered_nothing": ("<html><body><div id='root'></div><script>window.x = 1</script></body></html>",
                         "empty page"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_or_empty_page_fails_the_screenshot(name: str, tmp_path: Path) -> None:
    html, says = BROKEN[name]
    (tmp_path / "page.html").write_text(html)
    with pytest.raises(BrokenPage, match=says):
        screenshot(tmp_path / "page.html", tmp_path / "page.png", text_wait_s=0.5)
    assert (tmp_path / "page.png").is_file()  # the screenshot is kept to look at


def test_a_page_its_script_renders_passes(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("<html><body><div id='root'></div><script>setTimeout(() => "
                                        "document.getElementById('root').textContent = 'drawn later', 200)"
                                        "</script></body></html>")
    assert screenshot(tmp_path / "page.html", tmp_path / "page.png").text == "drawn later"


def test_every_report_in_a_folder_is_screenshot_including_evidently(tmp_path: Path) -> None:
    """An Evidently report carries its scripts and font inline: it renders offline, nothing fetched."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    settings = make_settings("local", tmp_path)
    folder = report_dir(settings)
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"score": rng.normal(size=300), "age_days": rng.exponential(30, size=300)})
    current = reference.assign(score=reference["score"] + 1.0)
    Report([DataDriftPreset()]).run(current, reference).save_html(str(folder / "drift_features.html"))
    write_verdict(folder, Verdict("drift", False, "drift: score", ["drift_features.html"]))
    build(settings)

    shots = screenshot_reports(settings.reports_path, SHOTS / "reports")
    by_page = {shot.png.relative_to(SHOTS / "reports").as_posix(): shot for shot in shots}
    assert set(by_page) == {"index.png", f"{folder.name}/drift_features.png"}
    evidently = by_page[f"{folder.name}/drift_features.png"]
    assert "Drifted Columns" in evidently.text and "score" in evidently.text
    assert evidently.external_requests == [] and evidently.png.stat().st_size > 20_000

    (folder / "broken.html").write_text("<html><body></body></html>")
    with pytest.raises(BrokenPage, match=r"1 of 3 pages broken:\n.*broken.html"):
        screenshot_reports(settings.reports_path, tmp_path / "shots")
