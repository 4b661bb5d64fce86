"""Click to feature and click to recommendation on the real servers, under 1,000 events/s of background load.

The world: ml-latest-small imported into the `services` stores (PostgreSQL catalog, Cassandra, a lake of
the benchmark's own), the demo's candidate artifact (`make demo` first), the feature repository applied to
Redis. Running: the API exactly as `make serve` runs it (`python -m bento_services serve`, services
profile) and the consumers as `make consumers` runs them (`recsys consume sessions features`, one process
each). The real users are split at random in two halves: a producer process sends 1,000 events/s of
background clicks and views of the first half (random items) straight to the topic; meanwhile probes, 4 per
second, each for a user of the second half not yet probed (so nothing but the probe gives them a session
or a real-time row), POST a click through the API and, from its 202:

- click to feature: poll the online store (`user_realtime:last_event_at`, stored to the second) until the user
  has a row as of the click's second, through the fast online path (`FastOnlineFeatures`, which answers
  exactly what `get_online_features` answers, tested) so that the polling itself costs little CPU;
- click to recommendation: poll the session store (`session:{user_id}`, what `GET /recommendations` reads)
  every 10 ms until it holds the click, then send one `GET /recommendations`, which must put a session
  item on top: the figure is the time to that answer. (Polling `GET` itself every 20-100 ms put 40+ full-path
  requests a second on the two cores this all shares, and measured mostly its own load.)

    python -m bench.click_latency [SECONDS]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from bench.common import CACHE, record
from bench.loadgen import percentiles, served
from ingestion.importer import Importer
from ingestion.movielens import MovieLensSource
from recsys.backends import open_activity, open_catalog, open_interactions, open_lake
from recsys.features.online import FastOnlineFeatures
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import ROOT_DIR, Settings
from recsys.stores.interactions_cassandra import cluster
from recsys.stores.redis_client import fail_fast_client
from recsys.streaming.topics import ensure_topics

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
BACKGROUND_RATE = 1_000
PROBES_PER_SECOND = 4
POLL_S = 0.02  # the online store, through the fast path: cheap
SESSION_POLL_S = 0.01
GIVE_UP_S = 10.0
DATABASE, KEYSPACE, REDIS_DB = "recsys_bench_click", "recsys_bench_click", 15
PORT = 58100


def world() -> Settings:
    base = Settings.load(profile="services")
    data = CACHE / "click"
    shutil.rmtree(data, ignore_errors=True)
    demo = base.data_path / "models"
    current = (demo / "CURRENT").read_text().strip()
    shutil.copytree(demo / current, data / "models" / current)
    (data / "models" / "CURRENT").write_text(current)
    repo = data / "feature_repo"
    shutil.copytree(ROOT_DIR / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={
        "data_dir": data,
        "kafka": base.kafka.model_copy(update={"topic": f"bench-click-{tag}"}),
        "streaming": base.streaming.model_copy(update={"group_prefix": f"bench-click-{tag}-",
                                                       "dlq_topic": f"bench-click-{tag}.dlq"}),
        "postgres": base.postgres.model_copy(update={"database": DATABASE}),
        "cassandra": base.cassandra.model_copy(update={"keyspace": KEYSPACE}),
        "redis": base.redis.model_copy(update={"db": REDIS_DB}),
        "features": base.features.model_copy(update={"repo_path": repo, "project": f"click{tag}"}),
        "serving": base.serving.model_copy(update={"port": PORT}),
    })
    import psycopg

    with psycopg.connect(base.postgres.conninfo(), autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        db.execute(f'CREATE DATABASE "{DATABASE}"')
    session = cluster(settings.cassandra).connect()
    session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
    session.cluster.shutdown()
    fail_fast_client(settings.redis, 5.0).flushdb()
    with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
        catalog.migrate()
        interactions.migrate()
        Importer(catalog, interactions, open_lake(settings)).run(MovieLensSource(base.movielens_path))
    apply_repo(settings)
    ensure_topics(settings)
    return settings


def environment(settings: Settings) -> dict[str, str]:
    return {"RECSYS_PROFILE": "services", "RECSYS_DATA_DIR": str(settings.data_path),
            "RECSYS_KAFKA__TOPIC": settings.kafka.topic,
            "RECSYS_STREAMING__GROUP_PREFIX": settings.streaming.group_prefix,
            "RECSYS_STREAMING__DLQ_TOPIC": settings.streaming.dlq_topic,
            "RECSYS_POSTGRES__DATABASE": DATABASE, "RECSYS_CASSANDRA__KEYSPACE": KEYSPACE,
            "RECSYS_REDIS__DB": str(REDIS_DB), "RECSYS_FEATURES__REPO_PATH": str(settings.features.repo_path),
            "RECSYS_FEATURES__PROJECT": settings.features.project, "RECSYS_SERVING__PORT": str(PORT)}


BACKGROUND = """
import json, sys, time, uuid
from datetime import UTC, datetime
import numpy as np
from kafka import KafkaProducer
servers, topic, rate, seconds, users, items = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), \\
    json.loads(sys.argv[5]), json.loads(sys.argv[6])
rng = np.random.default_rng(1)
producer = KafkaProducer(bootstrap_servers=servers.split(","), acks="all", linger_ms=5)
start, sent = time.monotonic(), 0
while (now := time.monotonic() - start) < seconds:
    due = int(now * rate)
    for _ in range(due - sent):
        user = users[rng.integers(len(users))]
        event = {"kind": "interaction", "schema_version": 1, "event_id": str(uuid.uuid4()), "user_id": user,
                 "item_id": items[rng.integers(len(items))], "action_type": ["view", "click"][rng.integers(2)],
                 "event_time": datetime.now(UTC).isoformat(), "value": None, "session_id": None, "context": {}}
        producer.send(topic, key=user.encode(), value=json.dumps(event).encode())
    sent = due
    time.sleep(0.005)
producer.flush()
print(sent)
"""


class Probe:
    def __init__(self, settings: Settings, http: httpx.Client) -> None:
        self.settings, self.http = settings, http
        self.online = FastOnlineFeatures(open_feature_store(settings), "realtime_v1")
        self.sessions = open_activity(settings, "session")
        self.feature_ms: list[float] = []
        self.recommendation_ms: list[float] = []
        self.missed = {"feature": 0, "recommendation": 0}
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def run(self, user: str, item: str) -> None:
        moment = datetime.now(UTC).replace(microsecond=(datetime.now(UTC).microsecond // 1000) * 1000)
        answer = self.http.post("/interactions", json={"user_id": user, "item_id": item, "action_type": "click",
                                                        "event_time": moment.isoformat()})
        accepted = time.perf_counter()
        if answer.status_code != 202:
            with self._lock:
                self.errors.append(f"POST {answer.status_code}: {answer.text[:200]}")
            return
        threads = [threading.Thread(target=self._feature, args=(user, moment, accepted)),
                   threading.Thread(target=self._recommendation, args=(user, item, accepted))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _feature(self, user: str, moment: datetime, accepted: float) -> None:
        while time.perf_counter() - accepted < GIVE_UP_S:
            values, _ = self.online.user_features(user)
            seen = values["user_realtime__last_event_at"][0]
            if seen is not None and seen >= moment.replace(microsecond=0):
                with self._lock:
                    self.feature_ms.append((time.perf_counter() - accepted) * 1000)
                return
            time.sleep(POLL_S)
        with self._lock:
            self.missed["feature"] += 1

    def _recommendation(self, user: str, item: str, accepted: float) -> None:
        while time.perf_counter() - accepted < GIVE_UP_S:
            if any(a.item_id == item for a in self.sessions.recent(user)):
                body = self.http.get("/recommendations", params={"user_id": user, "n": 10}).json()
                if body.get("items") and body["items"][0]["source"] == "session":
                    with self._lock:
                        self.recommendation_ms.append((time.perf_counter() - accepted) * 1000)
                else:
                    with self._lock:
                        self.errors.append(f"session held the click but the answer did not show it: {body}")
                return
            time.sleep(SESSION_POLL_S)
        with self._lock:
            self.missed["recommendation"] += 1


def main() -> None:
    settings = world()
    env = environment(settings)
    events = open_lake(settings).interactions(columns=["user_id", "item_id"]).to_pandas()
    users = np.random.default_rng(0).permutation(sorted(events["user_id"].astype(str).unique())).tolist()
    items = sorted(events["item_id"].astype(str).unique())
    loaded, probed = users[:len(users) // 2], users[len(users) // 2:]
    logs = CACHE / "click" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    api = [sys.executable, "-m", "bento_services", "serve"]
    consumers = [sys.executable, "-m", "cli", "consume", "sessions", "features"]
    ready = f"http://127.0.0.1:{PORT}/healthz"
    with served(api, ready, logs / "api.log", env=env), \
            subprocess.Popen(consumers, cwd=ROOT_DIR, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                             stderr=open(logs / "consumers.log", "wb")) as group, \
            httpx.Client(base_url=f"http://127.0.0.1:{PORT}", headers={"X-API-Key": "dev-key"}, timeout=10) as http:
        time.sleep(15)  # the consumers join their groups
        background = subprocess.Popen([sys.executable, "-c", BACKGROUND, settings.kafka.bootstrap_servers,
                                       settings.kafka.topic, str(BACKGROUND_RATE), str(SECONDS + 5),
                                       json.dumps(loaded), json.dumps(items)], stdout=subprocess.PIPE)
        time.sleep(3)
        probe = Probe(settings, http)
        rng = np.random.default_rng(0)
        threads: list[threading.Thread] = []
        started = time.monotonic()
        for k, user in enumerate(probed[:int(SECONDS * PROBES_PER_SECOND)]):
            due = started + k / PROBES_PER_SECOND
            time.sleep(max(0.0, due - time.monotonic()))
            thread = threading.Thread(target=probe.run, args=(str(user), items[rng.integers(len(items))]))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        sent = int(background.communicate(timeout=120)[0] or 0)
        group.terminate()
    figures: dict[str, Any] = {
        "background_events_per_second": round(sent / (SECONDS + 5)), "probes": len(threads),
        "click_to_feature_ms": percentiles(probe.feature_ms),
        "click_to_recommendation_ms": percentiles(probe.recommendation_ms),
        "not_within_10s": probe.missed, "post_errors": probe.errors[:5],
        "poll_interval_ms": {"feature": POLL_S * 1000, "session_store": SESSION_POLL_S * 1000},
        "what": "from the 202 of POST /interactions (API as `make serve`, services profile) to the click's "
                "last_event_at in get_online_features / to the first GET /recommendations whose top item "
                "comes from the session; consumers as `make consumers`; 1,000 background events/s to Kafka",
    }
    record("click_latency", figures)


if __name__ == "__main__":
    main()
