"""The web playground (`GET /playground`) on the real app, and in headless Chromium.

One served world for the module (local profile: the in-process bus runs the consumers inside `POST
/interactions`, so a click is in the session log when the answer to the POST arrives): the tiny synthetic world,
item neighbours (the live session's picks), features materialized and a ranker that reads them, and two arms of
an experiment. The HTTP checks come first; then one browser session drives the page as a person would, by mouse
and by keyboard, and leaves screenshots in var/test-artifacts/playground/.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from bento_services.api.http import app_from_settings, create_app
from bento_services.api.playground_metrics import LiveMetrics, quantile
from recsys import serving_log
from recsys.models.neighbours import ItemNeighbours
from recsys.settings import ExperimentVariant, Settings
from tests.bento_services.conftest import API_KEY, FakeService, RecordingBus, api_settings, client, served
from tests.bento_services.pipeline_data import FakeRanker, World, build_world, with_features
from tests.conftest import make_settings
from tests.monitoring.screenshots import ARTIFACTS, PageInfo, _watch, browser

PLAIN_KEY = "plain-key"  # an ordinary key, not a playground key
SHOTS = ARTIFACTS / "playground"
ARMS = [ExperimentVariant(name="diverse", buckets=(0, 50), diversity_boost=0.9, experiment="play"),
        ExperimentVariant(name="holdout", buckets=(50, 60), shuffle=True, experiment="play")]
LAPTOP = {"width": 1366, "height": 768}


@dataclass
class Served:
    url: str
    http: httpx.Client
    world: World
    settings: Settings


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("playground")
    base = make_settings("local", tmp_path)
    base = base.model_copy(update={"monitoring": base.monitoring.model_copy(update={"log_flush_seconds": 0.1})})
    # Budgets a busy test machine does not run past (these tests are about the page, not about timeouts).
    base = api_settings(base, api_keys=[API_KEY, PLAIN_KEY], playground_api_keys=[API_KEY], experiments=ARMS,
                        rate_limit_per_second=10_000.0, rate_limit_burst=10_000, stage_timeout_ms={
                            stage: 5000.0 for stage in ("lookup", "precomputed", "user_state", "candidates",
                                                        "features", "ranking")})
    world = build_world(base, tmp_path)
    ItemNeighbours.build(world.events, neighbours=30).save(world.folder / "item_neighbours")
    settings = with_features(world, tmp_path)
    with served(app_from_settings(settings, ranker=FakeRanker())) as url, client(url) as http:
        yield Served(url, http, world, settings)


def answer(http: httpx.Client, user: str, **params: object) -> dict[str, object]:
    got = http.get("/recommendations", params={"user_id": user, "n": 10, **params})
    assert got.status_code == 200, got.text
    return dict(got.json())


def ids(body: dict[str, object]) -> list[str]:
    return [str(item["item_id"]) for item in body["items"]]  # type: ignore[attr-defined, index]


# -- the API side ----------------------------------------------------------------------------------------------

def test_the_page_and_its_files_are_served_with_a_same_origin_policy(playground: Served) -> None:
    page = httpx.get(f"{playground.url}/playground")  # no key needed for the page itself
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = httpx.get(f"{playground.url}/playground/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
        assert f"playground/{name}" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    config = httpx.get(f"{playground.url}/playground/api/config").json()
    assert [v["name"] for v in config["variants"]] == ["control", "diverse", "holdout"]
    assert config["features"] is True and config["suggested_key"] is None  # not the dev default key: not offered


def test_debug_adds_stage_times_and_a_forced_variant_needs_a_playground_key(playground: Served) -> None:
    user = playground.world.warm_user
    plain = answer(playground.http, user)
    assert "stage_ms" not in plain
    debug = answer(playground.http, user, debug="true")
    assert debug["stage_ms"]["total"] > 0 and {"lookup", "candidates"} <= set(debug["stage_ms"])  # type: ignore[index]
    assert debug["candidates_version"] == "v-test" and isinstance(debug["bucket"], int)
    with client(playground.url, PLAIN_KEY) as ordinary:
        refused = ordinary.get("/recommendations", params={"user_id": user, "variant": "diverse"})
        assert refused.status_code == 403 and "playground_api_keys" in refused.json()["detail"]
        assert ordinary.get("/playground/api/user", params={"user_id": user}).status_code == 403
    unknown = playground.http.get("/recommendations", params={"user_id": user, "variant": "nope"})
    assert unknown.status_code == 400 and "control, diverse, holdout" in unknown.json()["detail"]
    forced = {arm: answer(playground.http, user, variant=arm) for arm in ("control", "diverse", "holdout")}
    assert {arm: body["variant"] for arm, body in forced.items()} == {
        arm: f"forced:{arm}" for arm in ("control", "diverse", "holdout")}
    assert sorted(ids(forced["holdout"])) == sorted(ids(forced["control"]))  # the holdout shuffles the same list
    logged = _logged(playground.settings, [str(body["request_id"]) for body in forced.values()])
    assert sorted(logged["variant"]) == ["forced:control", "forced:diverse", "forced:holdout"]


def test_reads_history_titles_features_and_metrics(playground: Served) -> None:
    http, world = playground.http, playground.world
    user = world.warm_user
    before = http.get("/playground/api/metrics").json()["total"]["requests"]
    shown = answer(http, user)
    item = ids(shown)[4]
    sent = http.post("/interactions", json={"user_id": user, "item_id": item, "action_type": "view",
                                            "request_id": shown["request_id"]})
    assert sent.status_code == 202, sent.text
    profile = http.get("/playground/api/user", params={"user_id": user}).json()
    assert profile["known"] and profile["assigned_variant"] in ("control", "diverse", "holdout")
    newest = profile["history"][0]
    catalog = world.items.set_index(world.items["item_id"].astype(str))
    assert (newest["item_id"], newest["action"], newest["session"]) == (item, "view", True)
    assert newest["title"] == catalog.loc[item, "title"] and newest["genres"]
    assert len(profile["history"]) == 20 and profile["unavailable"] == []
    titles = http.get("/playground/api/items", params={"ids": f"{item},no-such-item"}).json()
    assert titles[item]["title"] == catalog.loc[item, "title"] and titles["no-such-item"]["title"] is None
    features = http.get("/playground/api/features", params={"user_id": user, "item_id": item}).json()
    assert features["service"] == "ranker_v2" and features["features"]
    statuses = {row["status"] for row in features["features"]}
    assert statuses <= {"present", "missing", "stale"} and "present" in statuses
    assert http.get("/playground/api/random-user").json()["user_id"] in set(world.events["user_id"].astype(str))
    after = http.get("/playground/api/metrics").json()
    assert after["total"]["requests"] >= before + 1 and after["total"]["p99_ms"] > 0
    assert 0 <= after["total"]["degraded_share"] <= 1 and "precomputed" in after["total"]["cache_hit_rate"]


def test_no_playground_key_no_playground(tmp_path: Path) -> None:
    settings = api_settings(Settings.load().model_copy(update={"data_dir": tmp_path}), playground_api_keys=[])
    with served(create_app(settings, FakeService(), RecordingBus())) as url, client(url) as http:
        assert http.get("/playground").status_code == 404
        assert http.get("/playground/api/user", params={"user_id": "u1"}).status_code == 403
        assert http.get("/recommendations", params={"user_id": "u1", "variant": "control"}).status_code == 403
        assert http.get("/recommendations", params={"user_id": "u1"}).status_code == 200


def _logged(settings: Settings, request_ids: list[str], timeout_s: float = 10.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout_s
    while True:
        log = serving_log.read(settings.lake_path)
        found = log[log["request_id"].isin(request_ids)] if len(log) else log
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# -- the live metrics -------------------------------------------------------------------------------------------

def test_quantiles_read_off_buckets_as_histogram_quantile_does() -> None:
    buckets = {0.001: 0.0, 0.002: 50.0, 0.005: 100.0, math.inf: 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.002)
    assert quantile(0.99, buckets) == pytest.approx(0.002 + 0.003 * 49 / 50)
    assert quantile(0.99, {0.001: 10.0, math.inf: 20.0}) == 0.001  # past the last finite bound: that bound
    assert quantile(0.99, {0.001: 0.0, math.inf: 0.0}) is None


def test_live_metrics_count_answers_of_recommendations_only() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    seconds = Histogram("recsys_request_seconds", "", ["endpoint"], buckets=(0.01, 0.1), registry=registry)
    requests = Counter("recsys_requests", "", ["endpoint", "status"], registry=registry)
    lookups = Counter("recsys_cache_lookups", "", ["layer", "result"], registry=registry)
    levels = Counter("recsys_degradations", "", ["level"], registry=registry)
    live = LiveMetrics(registry, window_seconds=60)
    assert live.summary()["recent"] is None  # nothing to compare with yet
    for status, took, level in (("200", 0.005, "full"), ("200", 0.05, "popular"), ("503", 0.005, "cold_start")):
        requests.labels("/recommendations", status).inc()
        seconds.labels("/recommendations").observe(took)
        levels.labels(level).inc()
    requests.labels("/interactions", "202").inc(10)
    lookups.labels("precomputed", "hit").inc(3)
    lookups.labels("precomputed", "miss").inc()
    live._snapshots[0].at -= 2  # two seconds ago
    total = live.summary()["total"]
    assert (total["requests"], total["errors"], total["answers"]) == (3, 1, 3)
    assert total["degraded_share"] == pytest.approx(1 / 3)  # popular; cold start is no degradation
    assert total["cache_hit_rate"] == {"precomputed": 0.75}
    assert 10 < total["p99_ms"] <= 100 and total["p50_ms"] <= 10
    recent = live.summary()["recent"]
    assert recent["requests"] == 3 and recent["per_second"] > 0


# -- in the browser --------------------------------------------------------------------------------------------

def test_the_page_in_chromium(playground: Served) -> None:
    """List with provenance, not interested, a click, keyboard, comparison, features; screenshots; no error."""
    user = playground.world.warm_user
    info = PageInfo(url=f"{playground.url}/playground", png=SHOTS / "list.png")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with browser() as chromium:
        context = chromium.new_context(viewport=LAPTOP)
        context.add_init_script(f"window.localStorage.setItem('recsys.playground.key', '{API_KEY}')")
        tab = context.new_page()
        _watch(tab, info)
        tab.goto(f"{playground.url}/playground?user={user}")
        first = _list(tab)
        assert len(first) == 10
        head = tab.locator("[data-panel='0'] .answer-head")
        assert user in tab.locator("#profile-body").inner_text()
        assert tab.locator("#history li").count() > 0
        provenance = " ".join(head.inner_text().split())
        for chip in ("full", "model fake-ranker-1", "candidates v-test", "computed", "lookup", "candidates"):
            assert chip in provenance, provenance
        rows = tab.locator("[data-panel='0'] .item")
        for k in range(rows.count()):
            row = rows.nth(k)
            assert row.get_attribute("data-source") and row.get_attribute("data-explanation")
            assert row.get_attribute("data-source") in row.inner_text()
        assert tab.locator("[data-panel='0'] .stagebar span").count() >= 3  # the time in each stage
        tab.screenshot(path=str(SHOTS / "list.png"), full_page=False)

        dropped = first[0]
        _press(tab, 0, 0, "not_interested")
        after = _list(tab, changed_from=first)
        assert dropped not in after and len(after) == 10

        clicked = after[3]
        _press(tab, 0, 3, "click")
        clicked_list = _list(tab, changed_from=after)
        assert clicked not in clicked_list  # the session consumed it
        sources = tab.locator("[data-panel='0'] .item").evaluate_all("rows => rows.map(r => r.dataset.source)")
        assert "session" in sources  # its neighbours took the top ranks
        assert "click" in tab.locator("#history li").first.inner_text()
        tab.screenshot(path=str(SHOTS / "after-click.png"), full_page=False)

        tab.locator("#user").focus()
        reached = _tab_until(tab, "document.activeElement.closest('.actions') !== null")
        assert reached, "Tab never reached an item's buttons"
        focused = tab.evaluate("document.activeElement.dataset.action")
        previous = _list(tab)
        tab.keyboard.press("Enter")  # the focused button by keyboard: an event, then a new list
        assert focused == "view"  # the first button of the first item
        _list(tab, changed_from=previous, request_changed=True)
        assert tab.evaluate("document.activeElement.dataset.action") == "view"  # focus stays on the row

        tab.select_option("#compare", "diverse")
        tab.wait_for_selector("[data-panel='1'] .item")
        assert tab.locator("[data-panel='1']").get_attribute("data-variant") == "forced:diverse"
        assert "in forced:diverse" in tab.locator("[data-panel='0'] .item").first.inner_text() \
            or "not in forced:diverse" in tab.locator("[data-panel='0'] .item").first.inner_text()
        tab.locator("[data-panel='0'] .item").first.locator("button[data-action='features']").click()
        table = tab.locator("[data-panel='0'] .features table")
        table.wait_for()
        assert "present" in table.inner_text()
        tab.wait_for_function("Number(document.getElementById('m-requests').textContent.replace(/\\D/g, '')) > 0",
                              timeout=10_000)  # the live metrics count the page's own requests
        tab.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
        info.text = tab.inner_text("body").strip()
        context.close()
    assert not info.problems, info.problems


def _list(tab: object, changed_from: list[str] | None = None, request_changed: bool = False) -> list[str]:
    """The first panel's item ids, once shown (and different from `changed_from`, or a new answer, if asked)."""
    from playwright.sync_api import Page

    assert isinstance(tab, Page)
    tab.wait_for_selector("[data-panel='0'] .item", timeout=20_000)
    if changed_from is not None:
        script = ("([old, anyAnswer]) => { const rows = [...document.querySelectorAll(\"[data-panel='0'] .item\")]"
                  ".map(r => r.dataset.item); return anyAnswer ? window.__seen !== "
                  "document.querySelector(\"[data-panel='0']\").dataset.requestId : rows.join() !== old.join(); }")
        tab.wait_for_function(script, arg=[changed_from, request_changed], timeout=20_000)
    tab.evaluate("window.__seen = document.querySelector(\"[data-panel='0']\").dataset.requestId")
    return list(tab.locator("[data-panel='0'] .item").evaluate_all("rows => rows.map(r => r.dataset.item)"))


def _press(tab: object, panel: int, row: int, action: str) -> None:
    from playwright.sync_api import Page

    assert isinstance(tab, Page)
    tab.locator(f"[data-panel='{panel}'] .item").nth(row).locator(f"button[data-action='{action}']").click()


def _tab_until(tab: object, condition: str, presses: int = 60) -> bool:
    from playwright.sync_api import Page

    assert isinstance(tab, Page)
    for _ in range(presses):
        tab.keyboard.press("Tab")
        if tab.evaluate(condition):
            return True
    return False
