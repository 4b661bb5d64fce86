"""A circuit breaker whose recovery is found by a background probe, not by callers' requests.

``closed``: calls go through. A call that fails for good (`failed`) opens it.
``open``: `allow` refuses at once, so nobody waits on a dependency that is known to be down; a daemon
thread runs `probe` every `interval_s` and, once it answers, moves the breaker to
``half_open``: one trial call at a time goes through (other callers are still refused); its success
closes the breaker, its failure opens it again and the probing resumes.

Thread-safe. `close` stops the prober for good (an open breaker then stays open).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Permit:
    """What `allow` hands a caller that may go ahead; `trial` marks the one half-open trial."""

    trial: bool


class CircuitBreaker:
    def __init__(self, probe: Callable[[], bool], interval_s: float = 0.5, name: str = "dependency") -> None:
        self._probe = probe
        self._interval_s = interval_s
        self._name = name
        self._lock = threading.Lock()
        self._state = CLOSED
        self._trial_out = False
        self._opened_at = 0.0
        self._prober: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def state(self) -> str:
        return self._state

    @property
    def is_open(self) -> bool:
        """Open: calls are refused and the prober runs (half-open does not count)."""
        return self._state == OPEN

    def open_for_s(self) -> float:
        """Seconds since the breaker opened (0 when it is closed)."""
        return time.monotonic() - self._opened_at if self._state != CLOSED else 0.0

    def allow(self) -> Permit | None:
        """A permit to make the call now, or None: refuse it without touching the dependency."""
        with self._lock:
            if self._state == CLOSED:
                return Permit(trial=False)
            if self._state == HALF_OPEN and not self._trial_out:
                self._trial_out = True
                return Permit(trial=True)
            return None

    def succeeded(self, permit: Permit) -> None:
        """The call went through: the dependency answers, so the breaker closes."""
        with self._lock:
            self._release(permit)
            if self._state != CLOSED:
                log.warning("%s answers again: circuit breaker closed", self._name)
            self._state = CLOSED

    def failed(self, permit: Permit | None = None) -> None:
        """A call failed all its attempts (or the dependency cannot be reached): open, and probe."""
        with self._lock:
            if permit is not None:
                self._release(permit)
            if self._state != OPEN:
                log.warning("%s is unreachable: circuit breaker open, probing every %.1f s", self._name,
                            self._interval_s)
                self._state = OPEN
                self._opened_at = time.monotonic()
            if self._prober is None and not self._stopped.is_set():
                self._prober = threading.Thread(target=self._probe_loop, name=f"breaker-probe-{self._name}",
                                                daemon=True)
                self._prober.start()

    def abandoned(self, permit: Permit) -> None:
        """The call ended without saying anything about the dependency (refused midway, or a bug)."""
        with self._lock:
            self._release(permit)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the prober (waits for a probe in progress, up to `timeout_s`)."""
        self._stopped.set()
        with self._lock:
            prober = self._prober
        if prober is not None and prober is not threading.current_thread():
            prober.join(timeout_s)

    def _release(self, permit: Permit) -> None:
        if permit.trial:
            self._trial_out = False

    def _probe_loop(self) -> None:
        while not self._stopped.wait(self._interval_s):
            with self._lock:
                if self._state != OPEN:
                    self._prober = None
                    return
            try:
                answers = self._probe()
            except Exception:  # noqa: BLE001 - a probe that raises is a dependency that does not answer
                log.debug("%s probe raised", self._name, exc_info=True)
                answers = False
            if answers:
                with self._lock:
                    if self._state == OPEN:
                        self._state = HALF_OPEN
                        log.warning("%s answers the probe: circuit breaker half-open", self._name)
                    self._prober = None
                    return
        with self._lock:
            self._prober = None
