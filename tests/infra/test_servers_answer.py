"""The servers `make services-up` starts are real and usable from the project's settings."""

from __future__ import annotations

import uuid

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer

from recsys.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("servers")]


def test_redis_stores_and_expires_keys() -> None:
    settings = Settings.load().redis
    client = redis.Redis(host=settings.host, port=settings.port, db=settings.db)
    key = f"test:{uuid.uuid4()}"
    client.set(key, "1", ex=60)
    assert client.get(key) == b"1" and 0 < client.ttl(key) <= 60
    client.delete(key)


def test_kafka_round_trips_a_keyed_event() -> None:
    settings = Settings.load().kafka
    topic = f"test-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    producer.send(topic, key=b"u1", value=b'{"item_id": "m1"}').get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest",
                             group_id=f"g-{topic}", consumer_timeout_ms=20_000)
    received = [(m.key, m.value) for m in consumer]
    consumer.close()
    assert received == [(b"u1", b'{"item_id": "m1"}')]
