"""The API's side of the serving log: each answer of `GET /recommendations` as a record, handed to a sink.

A request never waits on the log: `record` puts the record in a bounded buffer and returns; a thread writes
the buffer out every `monitoring.log_flush_seconds` (or sooner when it fills). A full buffer (the sink down or
slow) drops records and counts them (`recsys_serving_log_records{result="dropped"}`): answering matters
more than logging the answer. Sinks: `KafkaSink` on the `serving-log` topic in `services` (the `serving-log`
consumer moves it into the lake), `LakeSink` straight into the lake in `local`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from bento_services.metrics import SERVING_LOG
from bento_services.pipeline.contracts import RecommendationResponse
from recsys import serving_log
from recsys.settings import Settings

log = logging.getLogger(__name__)
BUFFER = 20_000


def to_record(answer: RecommendationResponse, at: datetime | None = None) -> dict[str, Any]:
    """The serving-log record of an answer (serving_log.SCHEMA, `served_at` in epoch milliseconds)."""
    moment = at or answer.at or datetime.now(UTC)
    return {
        "request_id": answer.request_id, "served_at": int(moment.timestamp() * 1000), "user_id": answer.user_id,
        "variant": answer.variant, "bucket": answer.bucket, "model_version": answer.model_version,
        "candidates_version": answer.candidates_version, "degradation": answer.degradation.value,
        "cached": answer.cached, "latency_ms": answer.stage_ms.get("total"), "stage_ms": answer.stage_ms,
        "item_ids": [i.item_id for i in answer.items], "scores": [float(i.score) for i in answer.items],
        "sources": [i.source for i in answer.items], "explanations": [i.explanation for i in answer.items],
        "features": serving_log.features_json(answer.features) if answer.features is not None else None,
    }


class Sink(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None:
        """Durably store a batch (raises when it could not)."""
        ...

    def close(self) -> None: ...


class LakeSink:
    """`local`: parts in the lake's `serving_log` folder."""

    def __init__(self, settings: Settings) -> None:
        self._root = settings.lake_path

    def write(self, records: list[dict[str, Any]]) -> None:
        serving_log.write(self._root, records)

    def close(self) -> None:
        return None


class KafkaSink:
    """`services`: the `serving-log` topic, keyed by user, acknowledged by the leader (acks=1), through librdkafka
    (as the interaction bus: its C threads do the network work, off the interpreter the requests need)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.monitoring.serving_log_topic
        self._producer: Any = None

    def write(self, records: list[dict[str, Any]]) -> None:
        if self._producer is None:
            from confluent_kafka import Producer

            from recsys.streaming.topics import ensure_topics

            ensure_topics(self._settings)
            self._producer = Producer({"bootstrap.servers": self._settings.kafka.bootstrap_servers, "acks": 1,
                                       "linger.ms": 20, "message.timeout.ms": 10_000,
                                       "client.id": "recsys-serving-log"})
        failed: list[str] = []

        def delivered(error: Any, _: Any) -> None:
            if error is not None:
                failed.append(error.str())

        for record in records:
            self._producer.produce(self._topic, value=_json(record), key=record["user_id"].encode(),
                                   on_delivery=delivered)
            self._producer.poll(0)
        if self._producer.flush(10) > 0 or failed:
            raise RuntimeError(f"{len(failed) or 'some'} serving-log records not acknowledged: "
                               f"{failed[0] if failed else 'timed out'}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)


class ServingLog:
    """Bounded buffer + writer thread over a sink; `record` never blocks."""

    def __init__(self, sink: Sink, flush_seconds: float = 1.0, capacity: int = BUFFER) -> None:
        self._sink = sink
        self._flush_seconds = flush_seconds
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._flushed = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="recsys-serving-log")
        self._thread.start()

    def record(self, answer: RecommendationResponse) -> None:
        try:
            self._queue.put_nowait(to_record(answer))
        except queue.Full:
            SERVING_LOG.labels("dropped").inc()
            return
        with self._flushed:
            self._pending += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record recorded so far was written (or dropped after failing); False on timeout."""
        with self._flushed:
            return self._flushed.wait_for(lambda: self._pending == 0, timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._sink.close()

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self._flush_seconds)
            self._drain()
            if stopping:
                return

    def _drain(self) -> None:
        batch: list[dict[str, Any]] = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return
        try:
            self._sink.write(batch)
            SERVING_LOG.labels("written").inc(len(batch))
        except Exception as exc:  # noqa: BLE001 - the log must never take serving down; counted, logged
            SERVING_LOG.labels("failed").inc(len(batch))
            log.warning("serving log: %d records not written: %r", len(batch), exc)
        with self._flushed:
            self._pending -= len(batch)
            self._flushed.notify_all()


def open_serving_log(settings: Settings) -> ServingLog:
    """The profile's serving log: Kafka in `services`, the lake in `local`."""
    sink: Sink = KafkaSink(settings) if settings.profile == "services" else LakeSink(settings)
    return ServingLog(sink, settings.monitoring.log_flush_seconds)


def _json(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=_plain).encode()


def _plain(value: object) -> object:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else str(value)
