"""Events per second each streaming consumer sustains on the real servers, and with two members.

200,000 events (20,000 users, 5,000 items, a day of views, clicks, purchases and ratings) are produced to a
topic of the benchmark's own (12 partitions), then each consumer runs alone as `recsys consume NAME` (a
real process, as `make consumers` runs it) from the beginning of the topic; the rate is events committed
per second between the group's first commit and catching up (the group's lag, sampled every 0.5 s), so
process start-up is not counted. Then the store writer and the lake writer run again as two processes in
one group. Needs the servers (`make services-up`).

    python -m bench.streaming_throughput [EVENTS]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from bench.common import CACHE, record
from recsys.features.store import apply_repo
from recsys.settings import ROOT_DIR, Settings
from recsys.stores.interactions_cassandra import cluster
from recsys.streaming.topics import ensure_topics, group_lag

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
ACTIONS = np.array(["view", "view", "view", "click", "click", "add_to_cart", "purchase", "rate"])
KEYSPACE = "recsys_bench_stream"
REDIS_DB = 14


def bench_settings() -> Settings:
    base = Settings.load(profile="services")
    data = CACHE / "streaming"
    shutil.rmtree(data, ignore_errors=True)
    repo = data / "feature_repo"
    shutil.copytree(ROOT_DIR / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    tag = uuid.uuid4().hex[:8]
    return base.model_copy(update={
        "data_dir": data,
        "kafka": base.kafka.model_copy(update={"topic": f"bench-stream-{tag}"}),
        "streaming": base.streaming.model_copy(update={"group_prefix": f"bench-{tag}-",
                                                       "dlq_topic": f"bench-stream-{tag}.dlq"}),
        "cassandra": base.cassandra.model_copy(update={"keyspace": KEYSPACE}),
        "redis": base.redis.model_copy(update={"db": REDIS_DB}),
        "features": base.features.model_copy(update={"repo_path": repo, "project": f"bench{tag}"}),
    })


def produce(settings: Settings, count: int) -> None:
    from kafka import KafkaProducer

    rng = np.random.default_rng(5)
    start = datetime.now(UTC) - timedelta(days=1)
    users, items = rng.integers(20_000, size=count), rng.integers(5_000, size=count)
    actions = ACTIONS[rng.integers(len(ACTIONS), size=count)]
    offsets = np.sort(rng.integers(0, 86_400_000, size=count))
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers.split(","), acks="all",
                             linger_ms=20, batch_size=512 * 1024, compression_type=None)
    for k in range(count):
        action = str(actions[k])
        event = {"kind": "interaction", "schema_version": 1, "event_id": str(uuid.uuid4()),
                 "user_id": f"bu{users[k]}", "item_id": f"bi{items[k]}",
                 "event_time": (start + timedelta(milliseconds=int(offsets[k]))).isoformat(),
                 "action_type": action, "value": 4.0 if action == "rate" else None, "session_id": None,
                 "context": {"device": "web"}}
        producer.send(settings.kafka.topic, key=event["user_id"].encode(), value=json.dumps(event).encode())
    producer.flush(timeout=120)
    producer.close()


def environment(settings: Settings, prefix: str) -> dict[str, str]:
    return {**os.environ, "RECSYS_PROFILE": "services", "RECSYS_DATA_DIR": str(settings.data_path),
            "RECSYS_KAFKA__TOPIC": settings.kafka.topic, "RECSYS_STREAMING__GROUP_PREFIX": prefix,
            "RECSYS_STREAMING__DLQ_TOPIC": settings.streaming.dlq_topic,
            "RECSYS_CASSANDRA__KEYSPACE": KEYSPACE, "RECSYS_REDIS__DB": str(REDIS_DB),
            "RECSYS_FEATURES__REPO_PATH": str(settings.features.repo_path),
            "RECSYS_FEATURES__PROJECT": settings.features.project}


def run(settings: Settings, name: str, members: int, total: int) -> dict[str, float]:
    prefix = f"{settings.streaming.group_prefix}{name}-{members}m-"
    env = environment(settings, prefix)
    probe = settings.model_copy(update={"streaming": settings.streaming.model_copy(update={"group_prefix": prefix})})
    processes = [subprocess.Popen([sys.executable, "-m", "cli", "consume", name, "--metrics-port", "0"],
                                  cwd=ROOT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(members)]
    samples: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            left = sum(group_lag(probe, [name])[name].values())
            samples.append((time.monotonic(), left))
            print(f"  {name} x{members}: {total - left:,}/{total:,} committed", end="\r", flush=True)
            if left == 0:
                break
            if any(p.poll() is not None for p in processes):
                raise RuntimeError(f"{name} exited: {processes[0].stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.5)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    print()
    started = next(t for t, left in samples if left < total)
    # the last sample still at `total` bounds the first commit from below
    before = max((t for t, left in samples if left == total), default=started)
    finished = samples[-1][0]
    seconds = finished - before
    return {"events": total, "members": members, "seconds": round(seconds, 2),
            "events_per_second": round(total / seconds), "first_commit_after_s": round(started - samples[0][0], 2)}


def main() -> None:
    settings = bench_settings()
    print(f"producing {EVENTS:,} events to {settings.kafka.topic} ...")
    ensure_topics(settings)
    produce(settings, EVENTS)
    apply_repo(settings)  # the feature updater pushes through Feast's registry
    results: dict[str, dict[str, float]] = {}
    try:
        for name in ("store-writer", "lake-writer", "sessions", "features", "users"):
            results[name] = run(settings, name, 1, EVENTS)
        for name in ("store-writer", "lake-writer"):
            results[f"{name} x2"] = run(settings, name, 2, EVENTS)
    finally:
        session = cluster(settings.cassandra).connect()
        session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
        session.cluster.shutdown()
    record("streaming_throughput", {
        "what": "events/s committed per consumer process from a full topic (12 partitions), real servers; "
                "x2 = two processes in one group", "consumers": results,
    })


if __name__ == "__main__":
    main()
