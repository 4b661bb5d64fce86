"""Screenshots of HTML pages in headless Chromium, failing on a page a person could not read.

`screenshot(page, png)` opens a file or URL in Debian's Chromium (`bash infra/browser.sh` installs it), waits for
it to render, saves a full-page PNG and raises `BrokenPage` when the page is empty (no visible text in its
body), throws or logs a JavaScript error, or fails to load a resource. Pages must work offline: a request to
anything but a local file, inline data or a server on this machine is blocked and counts as a failure.
`screenshot_reports(folder, out_dir)` does it for every HTML file under a folder (one browser for all).

Run by hand: `.venv/bin/python -m tests.monitoring.screenshots FOLDER [OUT_DIR]`.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from recsys.settings import ROOT_DIR

#: Where tests leave their screenshots (git-ignored).
ARTIFACTS = ROOT_DIR / "var" / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOCAL_SCHEMES = {"file", "data", "blob", "about"}


class BrokenPage(AssertionError):
    """The page is empty or broken; the message lists what was wrong."""


@dataclass
class PageInfo:
    url: str
    png: Path
    title: str = ""
    text: str = ""  # the body's visible text
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)  # uncaught JavaScript exceptions
    failed_requests: list[str] = field(default_factory=list)  # resources that did not load (or answered >= 400)
    external_requests: list[str] = field(default_factory=list)  # blocked: the page must work offline

    @property
    def problems(self) -> list[str]:
        found = [f"JavaScript error: {e}" for e in self.page_errors]
        found += [f"console error: {e}" for e in self.console_errors]
        found += [f"resource failed: {r}" for r in self.failed_requests]
        found += [f"fetches from outside (blocked, must work offline): {r}" for r in self.external_requests]
        if not self.text:
            found.append("empty page: no visible text in <body>")
        return found


def chromium_path() -> str:
    """Debian's Chromium, or a loud failure that names the install script."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("headless Chromium is not installed: run `bash infra/browser.sh` (make test runs it)")
    return found


@contextmanager
def browser() -> Iterator[Browser]:
    """Headless Chromium through Playwright (its own browser downloads are never used)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield launched
        finally:
            launched.close()


def screenshot(page: str | Path, out_png: Path, *, within: Browser | None = None, width: int = 1280,
               settle_ms: int = 300, timeout_s: float = 30.0, text_wait_s: float = 10.0) -> PageInfo:
    """Open `page` (a path or URL), save a full-page PNG at `out_png`; `BrokenPage` when it is empty or broken.

    `text_wait_s` is how long a page's scripts get to put text on it before it counts as empty."""
    if within is None:
        with browser() as launched:
            return screenshot(page, out_png, within=launched, width=width, settle_ms=settle_ms,
                              timeout_s=timeout_s, text_wait_s=text_wait_s)
    url = _url(page)
    info = PageInfo(url=url, png=Path(out_png))
    context = within.new_context(viewport={"width": width, "height": 900})
    try:
        tab = context.new_page()
        _watch(tab, info)
        tab.goto(url, wait_until="load", timeout=timeout_s * 1000)
        _settle(tab, settle_ms, timeout_s, text_wait_s)
        info.title = tab.title()
        info.text = tab.inner_text("body").strip() if tab.query_selector("body") else ""
        info.png.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(info.png), full_page=True)
    finally:
        context.close()
    if info.problems:
        raise BrokenPage(f"{url} is broken (screenshot: {info.png}):\n  " + "\n  ".join(info.problems))
    return info


def screenshot_reports(folder: Path, out_dir: Path) -> list[PageInfo]:
    """Screenshot every HTML file under `folder` into `out_dir` (same relative paths, `.png`); `BrokenPage`
    listing every broken one after trying all. Fails when the folder holds no HTML at all."""
    pages = sorted(Path(folder).rglob("*.html"))
    if not pages:
        raise BrokenPage(f"no HTML file under {folder}")
    taken: list[PageInfo] = []
    broken: list[str] = []
    with browser() as launched:
        for page in pages:
            png = Path(out_dir) / page.relative_to(folder).with_suffix(".png")
            try:
                taken.append(screenshot(page, png, within=launched))
            except BrokenPage as exc:
                broken.append(str(exc))
    if broken:
        raise BrokenPage(f"{len(broken)} of {len(pages)} pages broken:\n" + "\n".join(broken))
    return taken


def _url(page: str | Path) -> str:
    if isinstance(page, str) and urlparse(page).scheme in {"http", "https", "file"}:
        return page
    path = Path(page).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no page at {path}")
    return path.as_uri()


def _is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in LOCAL_SCHEMES or (parsed.scheme in {"http", "https", "ws", "wss"}
                                              and parsed.hostname in LOCAL_HOSTS)


def _watch(tab: Page, info: PageInfo) -> None:
    """Record errors, failed loads and outside requests (which are aborted) on `info`."""

    def route(route: Route) -> None:
        if _is_local(route.request.url):
            route.continue_()
        else:
            info.external_requests.append(route.request.url)
            route.abort()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            info.console_errors.append(message.text)

    def failed(request: Request) -> None:
        if _is_local(request.url):
            info.failed_requests.append(f"{request.url} ({request.failure})")

    def answered(response: Response) -> None:
        if response.status >= 400:
            info.failed_requests.append(f"{response.url} (HTTP {response.status})")

    tab.route("**/*", route)
    tab.on("console", console)
    tab.on("pageerror", lambda error: info.page_errors.append(str(error)))
    tab.on("requestfailed", failed)
    tab.on("response", answered)


def _settle(tab: Page, settle_ms: int, timeout_s: float, text_wait_s: float) -> None:
    """Let scripts render: wait for the network to go quiet and for body text to appear (a page that never
    shows text is reported empty by the caller, not here)."""
    try:
        tab.wait_for_load_state("networkidle", timeout=timeout_s * 1000)
        tab.wait_for_function("() => document.body && document.body.innerText.trim().length > 0",
                              timeout=text_wait_s * 1000)
    except PlaywrightTimeout:  # a page that never shows text: the caller reports it empty
        return
    tab.wait_for_timeout(settle_ms)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m tests.monitoring.screenshots FOLDER [OUT_DIR]")
    source = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) == 3 else ARTIFACTS / "screenshots" / source.name
    for shot in screenshot_reports(source, target):
        print(f"{shot.png}  {shot.title!r}  {len(shot.text)} characters of text")
