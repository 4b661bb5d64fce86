"""The `services` bus: a kafka-python producer (acks=all, idempotent) on the one interaction-events topic.

A circuit breaker (`recsys.bus.breaker`) guards it: once a publish has failed all its attempts, Kafka is
known to be down and every publish is refused at once (503 with Retry-After) instead of holding an API
worker for its attempts; a background thread probes the broker (TCP connect and a metadata request) and
lets publishes through again as soon as it answers.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
from typing import Any

from recsys.bus.base import RETRY_AFTER_SECONDS, Outcome, ignore_outcome, publish_with_retries
from recsys.bus.breaker import CircuitBreaker
from recsys.errors import EventBusUnavailableError
from recsys.settings import KafkaSettings

#: Metadata v4 is served by every broker from Kafka 1.0 to 4.x (4.0 dropped v0-v3).
_METADATA_VERSION = 4
_correlation_ids = itertools.count(1)


class _RefusedByBreaker(EventBusUnavailableError):
    """Refused without trying: the breaker is open."""


class KafkaBus:
    """kafka-python producer with acks=all and idempotence, created on first use (Kafka may be down at start).

    `probe_interval_s` is how often the breaker's prober asks a broker that is known to be down whether it
    answers again; `probe_timeout_s` bounds each probe.
    """

    def __init__(self, settings: KafkaSettings, retries: int = 3, timeout_ms: float = 2000.0,
                 outcome: Outcome = ignore_outcome, *, probe_interval_s: float = 0.5,
                 probe_timeout_s: float = 0.5) -> None:
        self._settings = settings
        self._outcome = outcome
        self._retries = retries
        self._timeout_ms = int(timeout_ms)
        self._probe_timeout_s = probe_timeout_s
        self._producer: Any = None
        self._lock = threading.Lock()
        self._where = f"Kafka at {settings.bootstrap_servers}"
        self._breaker = CircuitBreaker(self._probe, probe_interval_s, name=self._where)

    def publish(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        permit = self._breaker.allow()
        if permit is None:
            self._outcome(kind, "failed")
            raise self._refusal(kind)
        value = json.dumps(payload, separators=(",", ":")).encode()

        def attempt() -> None:
            if self._breaker.is_open:  # another publish found Kafka down meanwhile: stop retrying
                self._outcome(kind, "failed")
                raise self._refusal(kind)
            future = self._get_producer().send(self._settings.topic, key=key.encode(), value=value)
            future.get(timeout=self._timeout_ms / 1000)

        try:
            publish_with_retries(kind, attempt, self._retries, self._where, self._outcome)
        except _RefusedByBreaker:
            self._breaker.abandoned(permit)
            raise
        except EventBusUnavailableError:
            self._breaker.failed(permit)
            raise
        except BaseException:
            self._breaker.abandoned(permit)
            raise
        self._breaker.succeeded(permit)

    def _refusal(self, kind: str) -> EventBusUnavailableError:
        return _RefusedByBreaker(
            f"could not publish the {kind} event to {self._where}: it is known to be down (circuit breaker "
            f"open for {self._breaker.open_for_s():.1f} s, probing in the background); "
            "retry later with the same event_id (retries are written once)",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        )

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
                    # Reconnect within a second of a broker's return (the default backs off up to 30 s).
                    reconnect_backoff_max_ms=1000,
                )
            return self._producer
        finally:
            self._lock.release()

    def ready(self) -> bool:
        """The breaker is not open and a bootstrap server accepts a TCP connection (no metadata round trip)."""
        if self._breaker.is_open:
            return False
        return any(self._connects(host, port) for host, port in self._servers())

    def close(self) -> None:
        self._breaker.close()
        if self._producer is not None:
            self._producer.close(timeout=self._timeout_ms / 1000)
            self._producer = None

    def _servers(self) -> list[tuple[str, int]]:
        servers = []
        for server in self._settings.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            servers.append((host or "127.0.0.1", int(port)))
        return servers

    @staticmethod
    def _connects(host: str, port: int) -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.25):
                return True
        except OSError:
            return False

    def _probe(self) -> bool:
        """A bootstrap server accepts a connection and answers a metadata request naming a broker."""
        return any(self._answers_metadata(host, port) for host, port in self._servers())

    def _answers_metadata(self, host: str, port: int) -> bool:
        from kafka.protocol.metadata import MetadataRequest, MetadataResponse

        correlation_id = next(_correlation_ids) % 2**31
        request = MetadataRequest(topics=[], allow_auto_topic_creation=False, version=_METADATA_VERSION)
        request.with_header(correlation_id=correlation_id, client_id="recsys-api-probe")
        try:
            with socket.create_connection((host, port), timeout=self._probe_timeout_s) as sock:
                sock.settimeout(self._probe_timeout_s)
                sock.sendall(request.encode(header=True, framed=True))
                (size,) = struct.unpack(">i", _read_exactly(sock, 4))
                if not 0 < size <= 1 << 20:
                    return False
                response = MetadataResponse.decode(_read_exactly(sock, size), version=_METADATA_VERSION,
                                                   header=True)
        except (OSError, ValueError, struct.error):
            return False
        return bool(response.header.correlation_id == correlation_id and response.brokers)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the connection closed mid-answer")
        data.extend(chunk)
    return bytes(data)
