"""The streaming consumers' lag as `/readyz` reports it: each group's events not yet committed, refreshed in
the background (`recsys.streaming.topics.group_lag`), compared with `streaming.lag_threshold`.

Reported, not a readiness condition: taking API replicas out of rotation would not make a consumer catch
up, and answers stay correct while it lags (the session and real-time features are late, not wrong).
In `local` the consumers run inside `POST /interactions`, so there is no lag to report.
"""

from __future__ import annotations

import logging
import threading

from recsys.settings import Settings

log = logging.getLogger(__name__)
REFRESH_SECONDS = 10.0


class ConsumerLag:
    def __init__(self, settings: Settings, every_seconds: float = REFRESH_SECONDS) -> None:
        from recsys.backends import CONSUMERS

        self.settings, self.names = settings, list(CONSUMERS)
        self.threshold = settings.streaming.lag_threshold
        self._lag: dict[str, int] | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._loop, args=(every_seconds,), daemon=True, name="recsys-consumer-lag").start()

    def _loop(self, every_seconds: float) -> None:
        from recsys.streaming.topics import group_lag

        while True:
            try:
                self._lag = {name: sum(parts.values()) for name, parts in group_lag(self.settings, self.names).items()}
            except Exception as exc:  # noqa: BLE001 - Kafka unreachable: the lag is unknown, not zero
                log.info("consumer lag unknown: %r", exc)
                self._lag = None
            if self._stop.wait(every_seconds):
                return

    def report(self) -> dict[str, object]:
        lag = self._lag
        return {"lag": lag, "threshold": self.threshold,
                "within_threshold": None if lag is None else all(v <= self.threshold for v in lag.values())}

    def close(self) -> None:
        self._stop.set()


def consumer_lag(settings: Settings) -> ConsumerLag | None:
    """The lag watch of the `services` profile; None in `local`."""
    return ConsumerLag(settings) if settings.profile == "services" else None
