"""The consumers on the real Kafka, Cassandra and Redis, with the faults the design names injected:
invalid events, a consumer SIGKILLed mid-batch, a rebalance mid-stream, a store that goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.backends import open_activity, open_consumer, open_interactions, open_lake
from recsys.features.store import apply_repo, open_feature_store
from recsys.settings import ROOT_DIR, Settings
from recsys.streaming.metrics import DEAD_LETTERS
from tests.conftest import make_settings, own_feature_repo
from tests.streaming.helpers import Member, caught_up, events, members, own_streams, produce, wait_until
from tests.streaming.proxy import Proxy


@pytest.fixture
def settings(servers: None, tmp_path: Path) -> Iterator[Settings]:
    base = make_settings("services", tmp_path)
    keyspace = f"stream_{uuid.uuid4().hex[:8]}"
    yield own_streams(base.model_copy(update={"cassandra": base.cassandra.model_copy(update={"keyspace": keyspace})}),
                      "consumers")
    try:
        with open_interactions(base) as store:
            store._session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001, S110 - cleanup only
        pass


def lake_ids(settings: Settings) -> list[str]:
    return [str(i) for i in open_lake(settings).interactions(columns=["event_id"])["event_id"].to_pylist()]


def cassandra_ids(settings: Settings, users: list[str]) -> list[str]:
    with open_interactions(settings) as store:
        store.migrate()
        found: list[str] = []
        for user in users:
            found += [str(i) for i in store.user_events(user, limit=1_000_000)["event_id"]]
        return found


def test_invalid_events_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing(settings: Settings) -> None:
    from kafka import KafkaConsumer

    good = events(users=1, per_user=4)
    bad: list[bytes] = [b"{not json", json.dumps({**good[0], "schema_version": 9}).encode(),
                        json.dumps({**good[0], "action_type": "teleport"}).encode()]
    # all on one key, so on one partition: good, bad, good, bad, ...
    stream: list[dict[str, Any] | bytes] = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3]]
    before = DEAD_LETTERS.labels("lake-writer", "unknown action_type")._value.get()
    produce(settings, stream, key=lambda m: b"su0")
    with members(settings, ["lake-writer"]):
        # 90 s as the other waits here: a rebalance (a previous test's member leaving) can hold the group for a
        # session timeout and more on a loaded machine
        wait_until(lambda: caught_up(settings, ["lake-writer"]), 90, "the lake writer caught up")
    assert sorted(lake_ids(settings)) == sorted(e["event_id"] for e in good)
    reader = KafkaConsumer(settings.streaming.dlq_topic, bootstrap_servers=settings.kafka.bootstrap_servers,
                           auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=3000)
    dead = list(reader)
    reader.close()
    assert [m.value for m in dead] == bad  # the original bytes, in order
    reasons = [dict(m.headers)["reason"].decode() for m in dead]
    assert reasons[0].startswith("not JSON") and "schema_version 9" in reasons[1] and "teleport" in reasons[2]
    assert all(dict(m.headers)["source_topic"].decode() == settings.kafka.topic for m in dead)
    assert DEAD_LETTERS.labels("lake-writer", "unknown action_type")._value.get() == before + 1


def consume_process(settings: Settings, name: str) -> subprocess.Popen[bytes]:
    """`recsys consume NAME` as its own process, with the test's topic, groups and keyspace."""
    env = {**os.environ, "RECSYS_PROFILE": "services", "RECSYS_KAFKA__TOPIC": settings.kafka.topic,
           "RECSYS_STREAMING__GROUP_PREFIX": settings.streaming.group_prefix,
           "RECSYS_STREAMING__DLQ_TOPIC": settings.streaming.dlq_topic,
           "RECSYS_STREAMING__PARTITIONS": str(settings.streaming.partitions),
           "RECSYS_STREAMING__BATCH_MAX_EVENTS": "500", "RECSYS_CASSANDRA__KEYSPACE": settings.cassandra.keyspace,
           "RECSYS_DATA_DIR": str(settings.data_path), "RECSYS_VAR_DIR": str(settings.var_dir)}
    return subprocess.Popen([sys.executable, "-m", "cli", "consume", name, "--metrics-port", "0"], cwd=ROOT_DIR,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("name", ["store-writer", "lake-writer"])
def test_sigkill_mid_batch_then_restart_leaves_every_event_exactly_once(settings: Settings, name: str) -> None:
    sent = events(users=40, per_user=150)  # 6,000 events in batches of 500
    users = sorted({e["user_id"] for e in sent})
    produce(settings, sent)

    def written() -> list[str]:
        return cassandra_ids(settings, users) if name == "store-writer" else lake_ids(settings)

    process = consume_process(settings, name)
    try:
        wait_until(lambda: len(written()) > 0, 90, f"{name} wrote its first batch")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    partly = len(written())
    assert 0 < partly < len(sent), f"killed too late to test anything: {partly} of {len(sent)} written"
    process = consume_process(settings, name)
    try:
        wait_until(lambda: caught_up(settings, [name]), 120, f"{name} caught up after the restart", every_s=1.0)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    ids = written()
    assert len(ids) == len(sent) and set(ids) == {e["event_id"] for e in sent}  # none missing, none twice


def test_a_second_member_joining_and_the_first_leaving_mid_stream_lose_nothing(settings: Settings) -> None:
    sent = events(users=50, per_user=100)
    parts = [sent[k:k + 1_250] for k in range(0, len(sent), 1_250)]
    first = Member(settings, open_consumer(settings, "lake-writer"))
    second: Member | None = None
    try:
        produce(settings, parts[0])
        wait_until(lambda: first.runner.applied > 0, 60, "the first member applied a batch")
        second = Member(settings, open_consumer(settings, "lake-writer"))  # a rebalance, mid-stream
        produce(settings, parts[1])
        wait_until(lambda: second is not None and len(second.runner.assignment()) > 0, 60,
                   "the second member was given partitions")
        assert len(first.runner.assignment()) < settings.streaming.partitions  # they share the partitions
        produce(settings, parts[2])
        wait_until(lambda: second is not None and second.runner.applied > 0, 60, "the second member applied a batch")
        first.stop()  # another rebalance: the second takes every partition
        produce(settings, parts[3])
        wait_until(lambda: caught_up(settings, ["lake-writer"]), 60, "the group caught up")
        assert len(second.runner.assignment()) == settings.streaming.partitions
    finally:
        if first.thread.is_alive():
            first.stop()
        if second is not None:
            second.stop()
    ids = lake_ids(settings)
    assert len(ids) == len(sent) and set(ids) == {e["event_id"] for e in sent}


@pytest.mark.parametrize(("store", "name"), [("cassandra", "store-writer"), ("redis", "sessions"),
                                              ("redis", "features")])
def test_a_store_that_goes_away_stops_the_commits_and_the_consumer_catches_up_after(
    settings: Settings, store: str, name: str, tmp_path: Path
) -> None:
    if name == "features":  # a feature repository of the test's own, applied while Redis is reachable
        settings = own_feature_repo(settings, tmp_path)
        apply_repo(settings)
    upstream = settings.cassandra.port if store == "cassandra" else settings.redis.port
    proxy = Proxy(upstream)
    section = getattr(settings, store).model_copy(update={"port": proxy.port})
    settings = settings.model_copy(update={store: section})
    sent = events(users=20, per_user=10)
    users = sorted({e["user_id"] for e in sent})
    produce(settings, sent)
    proxy_up = False
    try:
        with members(settings, [name]) as [member]:
            time.sleep(5)  # the store is unreachable: batches fail and are retried, nothing is committed
            assert member.runner.applied == 0 and not caught_up(settings, [name])
            proxy.start()
            proxy_up = True
            wait_until(lambda: caught_up(settings, [name]), 60, f"{name} caught up once {store} was back")
        if name == "store-writer":
            ids = cassandra_ids(settings, users)
        elif name == "sessions":
            with open_activity(settings, "session") as logs:
                ids = [a.event_id for user in users for a in logs.recent(user)]
        else:  # every user's real-time row counts all of their events, once
            online = open_feature_store(settings).get_online_features(
                features=["user_realtime:events_1d"], entity_rows=[{"user_id": u} for u in users]).to_dict()
            assert online["events_1d"] == [10] * len(users)
            return
        assert sorted(ids) == sorted(e["event_id"] for e in sent)
    finally:
        if proxy_up:
            proxy.stop()


def test_the_lag_readyz_reports_follows_each_group(settings: Settings) -> None:
    from bento_services.api.lag import ConsumerLag

    sent = events(users=5, per_user=20)
    produce(settings, sent)
    watch = ConsumerLag(settings.model_copy(update={
        "streaming": settings.streaming.model_copy(update={"lag_threshold": 50})}), every_seconds=0.2)
    try:
        wait_until(lambda: watch.report()["lag"] is not None, 30, "the lag was read")
        report = watch.report()
        # Every consumer of the events is behind by all of them; `serving-log` reads another topic, still empty.
        assert report["lag"] == {name: 0 if name == "serving-log" else len(sent)  # type: ignore[union-attr]
                                 for name in report["lag"]}
        assert report["within_threshold"] is False and report["threshold"] == 50
        with members(settings, ["sessions"]):
            wait_until(lambda: watch.report()["lag"]["sessions"] == 0, 60, "the sessions group caught up")  # type: ignore[index]
        assert watch.report()["lag"]["store-writer"] == len(sent)  # type: ignore[index]  # not running: behind
    finally:
        watch.close()
