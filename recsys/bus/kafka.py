"""The `services` bus: a kafka-python producer (acks=all, idempotent) on the one interaction-events topic."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

from recsys.bus.base import Outcome, ignore_outcome, publish_with_retries
from recsys.settings import KafkaSettings


class KafkaBus:
    """kafka-python producer with acks=all and idempotence, created on first use (Kafka may be down at start)."""

    def __init__(self, settings: KafkaSettings, retries: int = 3, timeout_ms: float = 2000.0,
                 outcome: Outcome = ignore_outcome) -> None:
        self._settings = settings
        self._outcome = outcome
        self._retries = retries
        self._timeout_ms = int(timeout_ms)
        self._producer: Any = None
        self._lock = threading.Lock()

    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        value = json.dumps(payload, separators=(",", ":")).encode()

        def attempt() -> None:
            future = self._get_producer().send(self._settings.topic, key=key.encode(), value=value)
            future.get(timeout=self._timeout_ms / 1000)

        publish_with_retries(kind, attempt, self._retries, f"Kafka at {self._settings.bootstrap_servers}",
                             self._outcome)

    def _get_producer(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaTimeoutError

        if self._producer is not None:
            return self._producer
        # Bounded: a producer that is still bootstrapping in another thread fails this attempt.
        if not self._lock.acquire(timeout=self._timeout_ms / 1000):
            raise KafkaTimeoutError("the Kafka producer is still connecting")
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self._settings.bootstrap_servers.split(","), client_id="recsys-api",
                    acks="all", enable_idempotence=True, linger_ms=0,
                    bootstrap_timeout_ms=self._timeout_ms, max_block_ms=self._timeout_ms,
                )
            return self._producer
        finally:
            self._lock.release()

    def ready(self) -> bool:
        """A bootstrap server accepts a TCP connection (cheap; no metadata round trip)."""
        for server in self._settings.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.25):
                    return True
            except OSError:
                continue
        return False

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self._timeout_ms / 1000)
            self._producer = None
