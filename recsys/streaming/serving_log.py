"""The `serving-log` consumer: the API's serving-log records from Kafka into the lake (`recsys.serving_log`).

Each batch becomes new part files of its serving days; a batch delivered twice (a crash before the commit)
writes its records twice, which readers drop by `request_id`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from recsys import serving_log
from recsys.streaming.decode import InvalidEvent


class ServingLogWriter:
    name = "serving-log"

    def __init__(self, lake_root: Path, topic: str) -> None:
        self.topic = topic
        self._root = lake_root

    @staticmethod
    def decode(value: bytes | None) -> dict[str, Any]:
        if value is None:
            raise InvalidEvent("empty message (tombstone)")
        try:
            record = serving_log.decode(value)
            record["_at"] = pd.Timestamp(int(record["served_at"]), unit="ms", tz="UTC")
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidEvent(f"not a serving-log record: {exc}") from exc
        return record

    def handle(self, events: list[dict[str, Any]]) -> None:
        serving_log.write(self._root, events)

    def close(self) -> None:
        return None
