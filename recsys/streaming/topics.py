"""The topics the project owns and the consumers' lag, through Kafka's admin API.

`ensure_topics` creates `interaction-events` and `serving-log` with `streaming.partitions` partitions (so
consumers can scale out) and the dead-letter topic, and raises the partition count of a topic created smaller (by an
auto-create, say). `group_lag` is what `recsys consume --status` prints and `/readyz` compares.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from recsys.settings import Settings

log = logging.getLogger(__name__)
TIMEOUT_MS = 5_000


def _servers(settings: Settings) -> list[str]:
    return settings.kafka.bootstrap_servers.split(",")


def admin(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=_servers(settings), client_id="recsys-admin",
                            request_timeout_ms=TIMEOUT_MS, bootstrap_timeout_ms=TIMEOUT_MS)


def topic_of(settings: Settings, name: str) -> str:
    """The topic consumer `name` reads."""
    return settings.monitoring.serving_log_topic if name == "serving-log" else settings.kafka.topic


def ensure_topics(settings: Settings) -> None:
    """Create the event and dead-letter topics if missing; grow the event topic to `streaming.partitions`."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    streaming = settings.streaming
    wanted = {settings.kafka.topic: streaming.partitions, streaming.dlq_topic: 1,
              settings.monitoring.serving_log_topic: streaming.partitions}
    client = admin(settings)
    try:
        existing = {t.get("name") or t.get("topic"): len(t["partitions"]) for t in client.describe_topics(list(wanted))
                    if not t.get("error_code")}
        missing = [NewTopic(name, count, streaming.replication_factor,
                            topic_configs={"min.insync.replicas": str(min(2, streaming.replication_factor))})
                   for name, count in wanted.items() if name not in existing]
        if missing:
            try:
                client.create_topics(missing, timeout_ms=TIMEOUT_MS)
            except TopicAlreadyExistsError:
                pass  # created meanwhile by another process
        _wait_for_leaders(client, list(wanted))  # also when another process is creating them right now
        have = existing.get(settings.kafka.topic)
        if have is not None and have < streaming.partitions:
            log.info("growing %s from %d to %d partitions", settings.kafka.topic, have, streaming.partitions)
            client.create_partitions({settings.kafka.topic: streaming.partitions}, timeout_ms=TIMEOUT_MS)
    finally:
        client.close()


def _wait_for_leaders(client: Any, topics: list[str], timeout_s: float = 15.0) -> None:
    """Until every partition of `topics` has a leader: a consumer that joins its group while a topic it subscribes
    to is still being created is assigned none of its partitions and may wait long for the next rebalance."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = client.describe_topics(topics)
        if all(not t.get("error_code") and t["partitions"] and all(p.get("leader_id", -1) >= 0 for p in t["partitions"])
               for t in described):
            return
        time.sleep(0.1)
    log.warning("topics %s have partitions without a leader after %.0f s", topics, timeout_s)


def group_lag(settings: Settings, names: list[str]) -> dict[str, dict[int, int]]:
    """Per consumer name, per partition of the topic it reads: events not yet committed by its group."""
    from kafka import KafkaConsumer, TopicPartition

    client = admin(settings)
    reader = KafkaConsumer(bootstrap_servers=_servers(settings), request_timeout_ms=TIMEOUT_MS + 1000,
                           client_id="recsys-lag")
    try:
        topics = {topic_of(settings, name) for name in names}
        ends_of = {topic: reader.end_offsets([TopicPartition(topic, p)
                                              for p in sorted(reader.partitions_for_topic(topic) or ())])
                   for topic in topics}
        groups = [settings.streaming.group_prefix + name for name in names]
        committed = client.list_group_offsets({g: None for g in groups})
        lag: dict[str, dict[int, int]] = {}
        for name, group in zip(names, groups):
            offsets = committed.get(group, {})
            lag[name] = {}
            for tp, end in ends_of[topic_of(settings, name)].items():
                done = offsets.get(tp)
                lag[name][tp.partition] = int(end) - (done.offset if done is not None and done.offset >= 0 else 0)
        return lag
    finally:
        reader.close()
        client.close()
