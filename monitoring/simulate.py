"""Simulated users: they get what the real API serves and click according to their true affinity.

A simulated visit is one `GET /recommendations` over HTTP, then `POST /interactions` for what the user did
with the list, each event carrying the answer's `request_id` (so the serving log and the events meet in
`monitoring.attribution` as they would for a real client). What the user does follows an examination model:

- the user examines rank r with probability 1 / r ** `position_decay` (position bias; 1 as in Joachims et al.,
  "Unbiased Learning-to-Rank with Biased Feedback", 2017) and posts a `view` for it;
- an examined item is clicked with probability `floor + scale * affinity` (affinity in [0, 1]: 1 for the
  user's favourite category, 0 for one they have no taste for);
- a click becomes a purchase with probability `purchase * affinity`, a purchase is rated with probability
  `rate`, the rating 1 + 4 * affinity plus noise, in half stars (4 or more means they liked it).

Affinity, the ground truth: for data from the synthetic generator, the user's latent taste for the item's
category (`ground_truth/user_tastes.parquet`, `items.parquet`), divided by their largest taste
(`TasteAffinity`); for ml-latest-small, which has no ground truth, the share of the user's well-rated
history in each of the item's genres, divided by their largest share, averaged over the item's genres
(`GenreAffinity`, an estimate).

The day: each user visits once or more, the visits in a random order across users (a day's traffic
interleaves them), sent as fast as the API answers. Given a `start`, the visits get moments spread over the
24 hours from it and the API answers each as at its moment (`as_of`, which a server allows with
`serving.allow_as_of`: a simulated day in the past, e.g. the day after ml-latest-small ends); without one the
day runs now, compressed. Each visit's events are stamped seconds after its moment, in funnel order, within
the session.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI

from monitoring import attribution
from monitoring.attribution import Served
from recsys import serving_log
from recsys.backends import open_lake
from recsys.events import INTERACTION_COLUMNS
from recsys.progress import progress
from recsys.settings import Settings


class Affinity(Protocol):
    def __call__(self, user_id: str, item_ids: Sequence[str]) -> np.ndarray:
        """The user's affinity to each item, in [0, 1]."""
        ...


@dataclass(frozen=True)
class TasteAffinity:
    """The synthetic generator's ground truth: taste for the item's category over the user's largest taste."""

    tastes: Mapping[str, np.ndarray]  # user -> taste per category code
    category: Mapping[str, int]  # item -> category code
    unknown_user: float = 0.2  # a user the generator did not make (a newcomer): the same mild taste for all

    @classmethod
    def from_ground_truth(cls, folder: Path) -> TasteAffinity:
        """From the generator's output folder (`items.parquet`, `ground_truth/user_tastes.parquet`)."""
        users = pd.read_parquet(Path(folder) / "ground_truth" / "user_tastes.parquet", columns=["user_id", "taste"])
        items = pd.read_parquet(Path(folder) / "items.parquet", columns=["item_id", "category"])
        codes = items["category"].astype(str).str.removeprefix("c").astype(int)
        tastes = {str(u): np.asarray(t, dtype=np.float64) for u, t in zip(users["user_id"], users["taste"])}
        return cls(tastes, dict(zip(items["item_id"].astype(str), codes.tolist())))

    def __call__(self, user_id: str, item_ids: Sequence[str]) -> np.ndarray:
        taste = self.tastes.get(user_id)
        if taste is None:
            return np.full(len(item_ids), self.unknown_user)
        scaled = taste / max(float(taste.max()), 1e-12)
        return np.array([scaled[self.category[i]] if i in self.category else 0.0 for i in item_ids])


@dataclass(frozen=True)
class GenreAffinity:
    """An estimate for data without ground truth (ml-latest-small): the user's genre shares from history."""

    shares: Mapping[str, Mapping[str, float]]  # user -> genre -> share of their liked items, over the largest
    genres: Mapping[str, tuple[str, ...]]  # item -> genres
    unknown_user: float = 0.2

    @classmethod
    def from_history(cls, settings: Settings, liked_rating: float = 4.0) -> GenreAffinity:
        """Genres from the lake's newest item snapshot (tags, else category); history from the lake's events
        (ratings of at least `liked_rating`, and every event that is not a rating). An item's affinity is the
        mean over its genres (a movie tagged with many genres is not liked for its most liked one alone)."""
        lake = open_lake(settings)
        items = lake.latest_snapshot("items")
        if items is None:
            raise FileNotFoundError(f"no item snapshot in the lake at {settings.lake_path}: import data first")
        genres = {str(i): _genres(tags, category) for i, tags, category in
                  zip(items["item_id"], items.get("tags", [None] * len(items)), items["category"])}
        events = lake.interactions(columns=["user_id", "item_id", "action_type", "value"]).to_pandas()
        liked = events[(events["action_type"] != "rate") | (events["value"] >= liked_rating)]
        pairs = liked.assign(genre=liked["item_id"].astype(str).map(genres)).explode("genre").dropna(subset=["genre"])
        counts = pairs.groupby(["user_id", "genre"]).size()
        shares: dict[str, dict[str, float]] = {}
        for user, per_genre in counts.groupby(level=0):
            values = per_genre.droplevel(0)
            shares[str(user)] = (values / values.max()).to_dict()
        return cls(shares, genres)

    def __call__(self, user_id: str, item_ids: Sequence[str]) -> np.ndarray:
        share = self.shares.get(user_id)
        if share is None:
            return np.full(len(item_ids), self.unknown_user)
        return np.array([float(np.mean([share.get(g, 0.0) for g in self.genres[i]])) if self.genres.get(i) else 0.0
                         for i in item_ids])


def _genres(tags: Any, category: Any) -> tuple[str, ...]:
    if tags is not None and len(tags):
        return tuple(str(t) for t in tags)
    return (str(category),) if isinstance(category, str) else ()


@dataclass(frozen=True)
class ClickModel:
    """How a simulated user acts on a list (see the module doc)."""

    scale: float = 0.5
    floor: float = 0.02
    position_decay: float = 1.0
    purchase: float = 0.4
    rate: float = 0.6
    rating_noise: float = 0.5

    def draw(self, affinity: np.ndarray, rng: np.random.Generator) -> list[tuple[int, str, float | None]]:
        """The events of one answer: (0-based rank, action, value), in funnel order per item."""
        ranks = np.arange(1, len(affinity) + 1)
        examined = rng.random(len(affinity)) < ranks ** -self.position_decay
        clicked = examined & (rng.random(len(affinity)) < self.floor + self.scale * affinity)
        bought = clicked & (rng.random(len(affinity)) < self.purchase * affinity)
        rated = bought & (rng.random(len(affinity)) < self.rate)
        stars = np.clip(np.round((1 + 4 * affinity + self.rating_noise * rng.standard_normal(len(affinity))) * 2) / 2,
                        0.5, 5.0)
        events: list[tuple[int, str, float | None]] = []
        for k in np.flatnonzero(examined):
            events.append((int(k), "view", None))
            if clicked[k]:
                events.append((int(k), "click", None))
            if bought[k]:
                events.append((int(k), "purchase", None))
            if rated[k]:
                events.append((int(k), "rate", float(stars[k])))
        return events


#: Seconds after the answer each action is stamped at (plus the rank, so a session reads top down). Never 0:
#: an event at the answer's very millisecond would be in the point-in-time join at `served_at` (<=) but was not
#: in the store the answer read, a skew of the simulation's own making.
OFFSETS = {"view": 0.5, "click": 1.0, "purchase": 20.0, "rate": 40.0}


@dataclass(frozen=True)
class Answer:
    """What the API answered one visit."""

    request_id: str | None
    user_id: str
    variant: str
    item_ids: list[str]
    at: datetime  # the visit's moment: its simulated time (`as_of`), else when the answer came


@dataclass
class SimulationResult:
    answers: list[Answer] = field(default_factory=list)
    events: int = 0  # interactions accepted (202)
    actions: Counter[str] = field(default_factory=Counter)  # accepted interactions by action
    failed: int = 0  # requests not answered 2xx
    logged: int | None = None  # answers found in the serving log afterwards (None: not waited for)

    @property
    def request_ids(self) -> list[str]:
        return [a.request_id for a in self.answers if a.request_id]


class Simulator:
    """Simulated users against an API reached by `client` (an httpx client with the base URL and API key)."""

    def __init__(self, client: httpx.Client, affinity: Affinity, clicks: ClickModel | None = None, n: int = 10,
                 seed: int = 0, views: bool = True, retries: int = 5) -> None:
        self.client, self.affinity, self.n, self.views, self.retries = client, affinity, n, views, retries
        self.clicks = clicks or ClickModel()
        self.rng = np.random.default_rng(seed)

    def visit(self, user_id: str, session: str, result: SimulationResult, at: datetime | None = None) -> None:
        """One visit: the answer (as at `at` when given: the API must allow `as_of`), then the events the click
        model draws for it, stamped seconds after the visit's moment."""
        params: dict[str, Any] = {"user_id": user_id, "n": self.n, "session_id": session}
        if at is not None:
            params["as_of"] = at.isoformat()
        got = self._send("GET", "/recommendations", params=params)
        if got.status_code != 200:
            result.failed += 1
            return
        body = got.json()
        items = [item["item_id"] for item in body["items"]]
        request_id = body.get("request_id") or got.headers.get("x-request-id")
        answer = Answer(request_id, user_id, str(body.get("variant")), items, at or datetime.now(UTC))
        result.answers.append(answer)
        for rank, action, value in self.clicks.draw(self.affinity(user_id, items), self.rng):
            if action == "view" and not self.views:
                continue
            moment = answer.at + timedelta(seconds=OFFSETS[action] + rank * 0.1)
            event: dict[str, Any] = {"user_id": user_id, "item_id": items[rank], "action_type": action,
                                     "value": value, "session_id": session, "event_time": moment.isoformat()}
            if request_id:
                event["request_id"] = request_id
            sent = self._send("POST", "/interactions", json=event)
            if sent.status_code == 202:
                result.events += 1
                result.actions[action] += 1
            else:
                result.failed += 1

    def _send(self, method: str, path: str, **arguments: Any) -> httpx.Response:
        """The request, sent again after the wait the API asks for when it is rate limited (429) or its event
        bus is busy (503), as a well-behaved client does; the last answer after `retries` tries."""
        for _ in range(max(1, self.retries)):
            answer = self.client.request(method, path, **arguments)
            if answer.status_code not in (429, 503):
                return answer
            time.sleep(min(float(answer.headers.get("retry-after", "1")), 5.0))
        return answer

    def run(self, users: Sequence[str], visits_per_user: float = 1.0, start: datetime | None = None,
            show_progress: bool = False) -> SimulationResult:
        """A day: each user visits 1 + Poisson(visits_per_user - 1) times, the visits in a random order; with
        `start`, at moments spread uniformly over the day from `start`, sent in time order as `as_of`."""
        extra = self.rng.poisson(max(visits_per_user - 1.0, 0.0), size=len(users))
        visits = [(u, k) for u, more in zip(users, extra) for k in range(1 + int(more))]
        order = self.rng.permutation(len(visits))
        moments: list[datetime | None] = [None] * len(visits)
        if start is not None:
            seconds = np.sort(self.rng.uniform(0, 86_400, size=len(visits)))
            moments = [start + timedelta(seconds=float(s)) for s in seconds]
        result = SimulationResult()
        with progress("simulated visits", len(visits), show_progress) as advance:
            for index, at in zip(order, moments):
                user, k = visits[index]
                self.visit(user, f"sim-{user}-{k}", result, at)
                advance(1)
        return result


def redraw(log: pd.DataFrame, affinity: Affinity, rng: np.random.Generator, arms: Mapping[str, float] | None = None,
           clicks: ClickModel | None = None, window: timedelta = timedelta(minutes=30)) -> Served:
    """The answers of a serving log as served, with fresh clicks drawn and, with `arms` (arm -> share), each
    user put into a fresh random arm: one more run of an experiment without serving again (the A/A check)."""
    clicks = clicks or ClickModel()
    log = log.copy()
    if arms is not None:
        users = log["user_id"].unique()
        drawn = rng.choice(list(arms), size=len(users), p=np.array(list(arms.values())) / sum(arms.values()))
        log["variant"] = log["user_id"].map(dict(zip(users, drawn)))
    rows: list[tuple[str, str, str, pd.Timestamp, str, float | None, None, str]] = []
    for request_id, user, items, served_at in zip(log["request_id"], log["user_id"], log["item_ids"],
                                                  log["served_at"]):
        items = list(items)
        for rank, action, value in clicks.draw(affinity(user, items), rng):
            if action != "view":
                at = served_at + pd.Timedelta(seconds=OFFSETS[action] + rank * 0.1)
                rows.append((f"{request_id}-{rank}-{action}", user, items[rank], at, action, value, None,
                             json.dumps({"request_id": request_id})))
    events = pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS))
    shown = attribution.impressions(log)
    return Served(log, shown, attribution.attribute(shown, events, window))


def simulate_day(settings: Settings, target: str | FastAPI, users: Sequence[str], *, n: int = 10,
                 visits_per_user: float = 1.0, seed: int = 0, ground_truth: Path | None = None,
                 affinity: Affinity | None = None, clicks: ClickModel | None = None, views: bool = True,
                 start: datetime | None = None, wait_seconds: float | None = None, show_progress: bool = True
                 ) -> SimulationResult:
    """A simulated day of traffic for `users` against `target` (a base URL, or an app served here on a
    loopback port for the duration, its serving log flushed when it stops).

    Affinity: `affinity` if given, else the synthetic ground truth under `ground_truth`, else the genre
    estimate from the lake's history. With `start` the day is the 24 hours from `start`, each visit answered
    as at its moment (`as_of`: the served app needs `serving.allow_as_of`); without, the visits run now.
    Afterwards waits up to `wait_seconds` (default: five log flushes plus ten seconds) for the answers to
    reach the serving log, and says how many did in `logged`.
    """
    if affinity is None:
        affinity = (TasteAffinity.from_ground_truth(ground_truth) if ground_truth is not None
                    else GenreAffinity.from_history(settings))
    key = settings.serving.api_keys[0].get_secret_value() if settings.serving.api_keys else None
    with _base_url(target) as url, httpx.Client(base_url=url, headers={"X-API-Key": key} if key else {},
                                                timeout=30) as client:
        result = Simulator(client, affinity, clicks, n, seed, views).run(users, visits_per_user, start, show_progress)
    wait = wait_seconds if wait_seconds is not None else 5 * settings.monitoring.log_flush_seconds + 10
    result.logged = wait_for_log(settings, result.request_ids, wait)
    return result


def wait_for_log(settings: Settings, request_ids: Sequence[str], timeout: float) -> int:
    """How many of `request_ids` the lake's serving log holds, polling until all are there or `timeout` passes."""
    wanted = set(request_ids)
    deadline = time.monotonic() + timeout
    while True:
        found = len(wanted & set(serving_log.read(settings.lake_path, columns=["request_id"])["request_id"]))
        if found == len(wanted) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` with uvicorn on a free 127.0.0.1 port in a thread (lifespan included); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the simulated users' API did not start (uvicorn)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def _base_url(target: str | FastAPI) -> Iterator[str]:
    if isinstance(target, str):
        yield target
        return
    with serve(target) as url:
        yield url
