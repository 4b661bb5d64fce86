"""One consumer on Kafka: its own group on `interaction-events`, offsets committed only after its effect is
durable, invalid events to the dead-letter topic, failed batches retried with backoff.

The loop: poll a batch (up to `batch_max_events`, waiting `batch_linger_ms` for more), decode each record
(an invalid one goes to `interaction-events.dlq` with the reason, the source topic, partition and offset in
headers and the original bytes as its value; the partition keeps flowing), apply the valid ones
(`Consumer.handle`), then commit the offset after the batch's last record. If the effect fails (a store
is down), nothing is committed: the consumer seeks back to the batch's first offsets and tries again
after a backoff that doubles up to `backoff_max_seconds`. A crash before the commit redelivers the batch
(to this member or, after a rebalance, to another): the consumers write idempotently by event_id, so
each event lands once. More members in one group share the partitions (12 by default).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from typing import Any

from recsys.settings import Settings
from recsys.streaming.consumers import Consumer, Event
from recsys.streaming.decode import InvalidEvent, decode
from recsys.streaming.metrics import BATCH_SECONDS, DEAD_LETTERS, EVENTS, LAG, NEWEST_AGE, reason_label
from recsys.streaming.topics import ensure_topics

log = logging.getLogger(__name__)
POLL_MS = 200
FIRST_BACKOFF_S = 0.5


class KafkaRunner:
    def __init__(self, consumer: Consumer, settings: Settings, stop: threading.Event | None = None) -> None:
        self.consumer = consumer
        self.settings = settings
        self.stop = stop or threading.Event()
        self.group = settings.streaming.group_prefix + consumer.name
        self.applied = 0  # events applied and committed by this runner (tests and benchmarks read it)
        self._kafka: Any = None
        self._dlq: Any = None
        # A consumer of another topic than the events brings its own topic and decoder.
        self._decode = getattr(consumer, "decode", decode)

    def run(self) -> None:
        """Consume until `stop` is set; the current batch is finished and committed first."""
        from kafka import KafkaConsumer

        ensure_topics(self.settings)
        streaming = self.settings.streaming
        topic = getattr(self.consumer, "topic", self.settings.kafka.topic)
        self._kafka = KafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap_servers.split(","),
            group_id=self.group, client_id=f"{self.group}-{os.getpid()}", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=streaming.batch_max_events,
            max_poll_interval_ms=300_000, session_timeout_ms=10_000, heartbeat_interval_ms=2_000,
        )
        # The topic's partitions in this client's metadata before it joins its group: a member that leads the
        # group's first assignment without them assigns nothing ("No partition metadata") and waits for a
        # metadata refresh to rebalance, which took past 30 s in the tests.
        self._kafka.partitions_for_topic(topic)
        self._kafka.subscribe([topic])
        log.info("consumer %s started (group %s)", self.consumer.name, self.group)
        backoff = FIRST_BACKOFF_S
        try:
            while not self.stop.is_set():
                batch = self._poll()
                if not batch:
                    continue
                if self._apply(batch):
                    backoff = FIRST_BACKOFF_S
                else:
                    self._rewind(batch)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, streaming.backoff_max_seconds)
        finally:
            self.consumer.close()
            self._kafka.close(autocommit=False)
            if self._dlq is not None:
                self._dlq.close(timeout=5)

    def assignment(self) -> set[int]:
        """The partitions this member holds now (empty before it joined its group)."""
        kafka = self._kafka
        return {tp.partition for tp in kafka.assignment()} if kafka is not None else set()

    # -- one batch ------------------------------------------------------------------------------------
    def _poll(self) -> dict[Any, list[Any]]:
        """Records by partition: one poll, then more until the linger time or the batch size is reached."""
        streaming = self.settings.streaming
        batch: dict[Any, list[Any]] = defaultdict(list)
        size = 0
        deadline = time.monotonic() + streaming.batch_linger_ms / 1000
        timeout = POLL_MS
        while size < streaming.batch_max_events:
            polled = self._kafka.poll(timeout_ms=timeout, max_records=streaming.batch_max_events - size)
            for tp, records in polled.items():
                batch[tp].extend(records)
                size += len(records)
            left = deadline - time.monotonic()
            if not size or left <= 0 or not polled:
                break
            timeout = int(left * 1000)
        return batch

    def _apply(self, batch: dict[Any, list[Any]]) -> bool:
        """Dead-letter the invalid, apply the valid, commit; False (nothing committed) when the effect failed."""
        name = self.consumer.name
        started = time.perf_counter()
        events: list[Event] = []
        invalid: list[tuple[Any, str]] = []
        for records in batch.values():
            for record in records:
                try:
                    events.append(self._decode(record.value))
                except InvalidEvent as exc:
                    invalid.append((record, exc.reason))
        try:
            if invalid:
                self._dead_letter(invalid)
            if events:
                self.consumer.handle(events)
        except Exception as exc:  # noqa: BLE001 - any failure: the batch is retried, never skipped
            EVENTS.labels(name, "failed").inc(len(events))
            log.warning("consumer %s: batch of %d events not applied, retrying: %r", name, len(events), exc)
            return False
        self._commit(batch)
        BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)
        EVENTS.labels(name, "applied").inc(len(events))
        EVENTS.labels(name, "invalid").inc(len(invalid))
        self.applied += len(events)
        if events:
            newest = max(e["_at"] for e in events)
            NEWEST_AGE.labels(name).set(max(0.0, time.time() - newest.timestamp()))
        self._record_lag(batch)
        return True

    def _dead_letter(self, invalid: list[tuple[Any, str]]) -> None:
        from kafka import KafkaProducer

        if self._dlq is None:
            self._dlq = KafkaProducer(bootstrap_servers=self.settings.kafka.bootstrap_servers.split(","),
                                      acks="all", client_id=f"{self.group}-dlq", max_block_ms=5_000)
        futures = []
        for record, reason in invalid:
            headers = [("reason", reason.encode()), ("consumer", self.consumer.name.encode()),
                       ("source_topic", record.topic.encode()), ("source_partition", str(record.partition).encode()),
                       ("source_offset", str(record.offset).encode())]
            futures.append(self._dlq.send(self.settings.streaming.dlq_topic, key=record.key, value=record.value,
                                          headers=headers))
            DEAD_LETTERS.labels(self.consumer.name, reason_label(reason)).inc()
        for future in futures:
            future.get(timeout=10)  # durable in the DLQ before the offsets move past them

    def _commit(self, batch: dict[Any, list[Any]]) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in batch.items()}
        try:
            self._kafka.commit(offsets)
        except KafkaError as exc:  # a rebalance took the partitions: the new owner reapplies (idempotent)
            log.warning("consumer %s: commit failed, the batch will be redelivered: %r", self.consumer.name, exc)

    def _rewind(self, batch: dict[Any, list[Any]]) -> None:
        for tp, records in batch.items():
            try:
                self._kafka.seek(tp, records[0].offset)
            except Exception as exc:  # noqa: BLE001 - no longer ours after a rebalance: its new owner resumes
                log.info("consumer %s: not rewinding %s: %r", self.consumer.name, tp, exc)

    def _record_lag(self, batch: dict[Any, list[Any]]) -> None:
        for tp, records in batch.items():
            end = self._kafka.highwater(tp)
            if end is not None:
                LAG.labels(self.consumer.name, str(tp.partition)).set(max(0, end - (records[-1].offset + 1)))
