"""The served app follows the release record under load: `python -m bento_services serve` (what `make serve` runs,
two BentoML workers) over a small world with two versions (candidate artifact and ranker in the model store);
while an open-loop generator sends GET /recommendations for random users over loopback, a canary goes to half
the users (`workflow.release.publish`) and is rolled back (`workflow.release.rollback`). No error; every answer
names exactly one of the two versions, the one the user's release bucket gives while the canary is on and stable
soon after the rollback; no answer over the request budget. Also which folder the service pins or follows."""

from __future__ import annotations

import gc
import http.client
import json
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from bench.loadgen import percentiles, served
from bento_services.models import served_candidates
from bento_services.pipeline.deployments import release_bucket
from recsys.features.service import RANKER_SERVICE
from recsys.release import Release, Version, write_release
from recsys.settings import Settings
from tests.bento_services.conftest import closed_port
from tests.bento_services.pipeline_data import VERSION, build_world, new_version, with_features
from tests.conftest import make_settings

STABLE, CANARY = Version(VERSION, "r1"), Version("v2", "r2")
SHARE = 50  # percent of users on the canary
POLL_S = 0.5  # serving.release_poll_seconds
RATE = 30.0  # requests per second
SETTLE_S = 5.0  # after the first canary answer: time for every worker to have loaded the canary (poll + load)
BACK_S = POLL_S + 2.0  # after the rollback: one poll and a margin (nothing to load)
HOLD_S = 4.0  # how long each settled phase is watched
KEY = "dev-key"
WORKERS = 2
STARTED = "Completed startup hook: freeze_heap"  # what BentoML logs once a worker is up


@dataclass(frozen=True)
class Answer:
    user: str
    due: float  # time.monotonic() when the request was due (sent then or later)
    done: float
    status: int  # 0: no HTTP answer
    body: dict[str, Any]

    @property
    def latency_ms(self) -> float:
        return (self.done - self.due) * 1e3

    @property
    def version(self) -> Version | None:
        """The version the answer names: its candidate artifact, and the ranker that ordered it (the artifact's
        name when a degraded answer was left in candidate order, `popular` for the artifact's popular items); None
        when the two belong to different versions."""
        candidates, model = self.body.get("candidates_version"), self.body.get("model_version")
        for version in (STABLE, CANARY):
            if candidates == version.candidates and model in (version.ranker, version.candidates, "popular"):
                return version
        return None


class OpenLoop:
    """GET /recommendations for users drawn at random, at a fixed rate whatever the server does, each on a new
    connection (so that every worker accepts some), timed from the moment it was due, until the block ends."""

    def __init__(self, port: int, users: list[str], rate: float, seed: int = 0) -> None:
        self.port, self.users, self.rate = port, users, rate
        self.rng = np.random.default_rng(seed)
        self.answers: list[Answer] = []
        self.max_send_lag_ms = 0.0
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="load")
        self._pending: list[Future[None]] = []
        self._thread = threading.Thread(target=self._send, daemon=True, name="load-scheduler")

    def __enter__(self) -> OpenLoop:
        gc.freeze()  # this process's heap (the world, Feast, torch) out of the collector's way: no client pauses
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for pending in self._pending:
            pending.result(timeout=60)
        self._pool.shutdown()
        gc.unfreeze()

    def seen(self, version: Version) -> bool:
        return any(a.version == version for a in list(self.answers))

    def _send(self) -> None:
        start = time.monotonic() + 0.05
        sent = 0
        while not self._stop.is_set():
            due = start + sent / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self.max_send_lag_ms = max(self.max_send_lag_ms, -delay * 1e3)
            user = self.users[int(self.rng.integers(len(self.users)))]
            self._pending.append(self._pool.submit(self._one, user, due))
            sent += 1

    def _one(self, user: str, due: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", f"/recommendations?user_id={quote(user)}&n=10&debug=true",
                               headers={"X-API-Key": KEY, "Connection": "close"})
            response = connection.getresponse()
            status, raw = response.status, response.read()
            body = json.loads(raw) if status == 200 else {"error": raw.decode(errors="replace")[:500]}
        except OSError as exc:
            status, body = 0, {"error": repr(exc)}
        finally:
            connection.close()
        self.answers.append(Answer(user, due, time.monotonic(), status, body))


def warm_up(port: int, users: list[str], rounds: int = 2) -> None:
    """Every user asked `rounds` times, one request at a time on new connections (both workers get some): the
    first requests of a worker run code paths for the first time, which is start-up, not a release."""
    for user in users * rounds:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", f"/recommendations?user_id={quote(user)}&n=10",
                               headers={"X-API-Key": KEY, "Connection": "close"})
            connection.getresponse().read()
        finally:
            connection.close()


def answers_per_worker(home: Path) -> dict[str, float]:
    """GET /recommendations answered so far by each worker process, from the per-process files of BentoML's
    Prometheus multiprocess mode (`BENTOML_HOME/prometheus_multiproc_dir`)."""
    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[str, float] = {}
    for path in (home / "prometheus_multiproc_dir").glob("counter_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, _ = json.loads(key)
            if sample == "recsys_requests_total" and labels.get("endpoint") == "/recommendations":
                pid = path.stem.removeprefix("counter_")
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def wait_until(condition: Any, seconds: float, what: str) -> float:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return time.monotonic()


def save_rankers(home: Path) -> None:
    """Two small trained rankers, `ranker:r1` and `ranker:r2`, in the model store under `home`."""
    from tests.training.test_ranker import COLUMNS, planted
    from training.ranker_train import RankerTrainConfig, save_ranker, train_ranker

    config = RankerTrainConfig(epochs=1, members=1, threads=1, patience=1)
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
    for version in ("r1", "r2"):
        trained = train_ranker(planted(lists=40), COLUMNS, config, progress=lambda _: None, version=version)
        save_ranker(trained, RANKER_SERVICE, start, end, {}, home=home)


def test_the_service_follows_the_record_when_the_data_directory_has_one(tmp_path: Path) -> None:
    settings = make_settings("local", tmp_path)
    pinned = SimpleNamespace(path=str(tmp_path / "store" / VERSION))  # a stored model, as the service sees it
    assert served_candidates(settings, pinned) == tmp_path / "store" / VERSION  # no record: the pinned model
    write_release(settings.data_path, Release(STABLE))
    assert served_candidates(settings, pinned) is None  # the record: followed
    off = settings.model_copy(update={"serving": settings.serving.model_copy(update={"follow_release": False})})
    assert served_candidates(off, pinned) == tmp_path / "store" / VERSION


def dump(path: Path, answers: list[Answer], marks: dict[str, float]) -> None:
    """Every answer (times in seconds from the canary's publication) and the marks, for a failure's reader."""
    zero = marks["published"]
    rows = [{"user": a.user, "due": round(a.due - zero, 3), "ms": round(a.latency_ms, 1), "status": a.status,
             "version": str(a.version), "degradation": a.body.get("degradation"),
             "stage_ms": a.body.get("stage_ms"), "error": a.body.get("error")} for a in answers]
    path.write_text(json.dumps({"marks": {k: round(v - zero, 3) for k, v in marks.items()}, "answers": rows}))


def serve_env(settings: Settings, home: Path, port: int) -> dict[str, str]:
    return {"RECSYS_PROFILE": "local", "RECSYS_DATA_DIR": str(settings.data_path),
            "RECSYS_FEATURES__REPO_PATH": str(settings.features.repo_path),
            "RECSYS_FEATURES__PROJECT": settings.features.project,
            "RECSYS_SERVING__HOST": "127.0.0.1", "RECSYS_SERVING__PORT": str(port),
            "RECSYS_SERVING__WORKERS": str(WORKERS), "RECSYS_SERVING__RELEASE_POLL_SECONDS": str(POLL_S),
            "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_served_app_publishes_and_rolls_back_a_canary_under_load_without_an_error(tmp_path: Path) -> None:
    from workflow.release import publish, rollback

    world = build_world(make_settings("local", tmp_path), tmp_path, users=120)
    settings = with_features(world, tmp_path)
    new_version(world, CANARY.candidates)
    home = tmp_path / "bentoml"
    save_rankers(home)
    write_release(settings.data_path, Release(STABLE))
    users = sorted(str(u) for u in world.events["user_id"].unique())
    canary_users = {u for u in users if release_bucket(u) < SHARE}
    assert 0 < len(canary_users) < len(users)
    budget_ms = settings.serving.request_budget_ms
    port = closed_port()
    quiet: list[str] = []

    command = [sys.executable, "-m", "bento_services", "serve"]
    with served(command, f"http://127.0.0.1:{port}/healthz", tmp_path / "serve.log",
                env=serve_env(settings, home, port), timeout_s=240):
        wait_until(lambda: (tmp_path / "serve.log").read_text().count(STARTED) >= WORKERS, 120,
                   "not every worker started")
        warm_up(port, users)
        before = answers_per_worker(home)
        with OpenLoop(port, users, RATE) as load:
            wait_until(lambda: len(load.answers) >= 2 * RATE, 30, "no answers on stable")
            published = time.monotonic()
            publish(settings, CANARY, SHARE, STABLE, progress=quiet.append)
            first_canary = wait_until(lambda: load.seen(CANARY), 60, "no answer from the canary")
            time.sleep(SETTLE_S)
            settled = time.monotonic()
            time.sleep(HOLD_S)
            rolling_back = time.monotonic()
            rollback(settings, "test", progress=quiet.append)
            time.sleep(BACK_S)
            back = time.monotonic()
            time.sleep(HOLD_S)
        per_worker = {pid: n - before.get(pid, 0) for pid, n in answers_per_worker(home).items()}
        log = (tmp_path / "serve.log").read_text(errors="replace")

    answers = sorted(load.answers, key=lambda a: a.due)
    marks = {"published": published, "first_canary": first_canary, "settled": settled,
             "rolling_back": rolling_back, "back": back}
    dump(tmp_path / "answers.json", answers, marks)
    # Every worker answered a share of the load: the bucket checks below would catch one not following.
    assert len(per_worker) == WORKERS and min(per_worker.values()) >= 0.1 * len(answers), per_worker
    failed = [(a.status, a.body) for a in answers if a.status != 200]
    assert failed == [], f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"
    mixed = [a.body for a in answers if a.version is None]
    assert mixed == [], f"answers naming no single version: {mixed[:5]}"
    assert all(a.version == STABLE for a in answers if a.done < published)
    assert all(a.version == STABLE for a in answers if a.user not in canary_users), "a stable user got the canary"
    during = [a for a in answers if a.due >= settled and a.done <= rolling_back]
    assert len(during) >= RATE * HOLD_S / 2
    wrong = [(a.user, a.version) for a in during if (a.version == CANARY) != (a.user in canary_users)]
    assert wrong == [], f"answers not on the version of the user's release bucket with the canary on: {wrong[:5]}"
    assert {a.version for a in during} == {STABLE, CANARY}
    after = [a for a in answers if a.due >= back]
    assert len(after) >= RATE * HOLD_S / 2 and {a.version for a in after} == {STABLE}, "not back on stable"
    last_canary = max(a.done for a in answers if a.version == CANARY)
    latencies = [a.latency_ms for a in answers]
    figures = {"answers": len(answers), "canary_answers": sum(a.version == CANARY for a in answers),
               "first_canary_after_s": round(first_canary - published, 2),
               "last_canary_after_rollback_s": round(last_canary - rolling_back, 2),
               "degraded": sum(a.body.get("degradation") != "full" for a in answers),
               "send_lag_ms": round(load.max_send_lag_ms, 1), **percentiles(latencies),
               "server_total_max_ms": max(a.body.get("stage_ms", {}).get("total", 0.0) for a in answers),
               "per_worker": sorted(per_worker.values())}
    print("release under load:", json.dumps(figures))
    # Latency as the client sees it, from each request's due time: loading a version (off the request path) and the
    # swaps stall no answer past the request budget.
    assert figures["max_ms"] <= budget_ms, f"an answer took over the {budget_ms:.0f} ms budget: {figures}"
    assert figures["degraded"] <= 0.05 * len(answers), f"too many degraded answers: {figures}"
    assert "Traceback" not in log, log[-3000:]
