"""HTTP load on loopback for the serving benchmarks: wrk for closed-loop runs, an open-loop generator of our own.

* `closed_loop(url, concurrency, seconds)` runs wrk (`infra/wrk.sh` installs it): N connections, each sending
  its next request as soon as the previous answer arrives; the figures for throughput.
* `open_loop(url, rate, seconds)` sends requests at a fixed rate whatever the server does (what "p99 at
  100 requests per second" means) over keep-alive connections, and times each request from the moment it
  was due, so a stalled server is charged for the requests queued behind the stall (no coordinated
  omission). Targets are cycled, or drawn at random (`seed`); `classify` labels each answer from its status
  and body (e.g. its degradation rung) and the result counts the labels and gives percentiles per label.
  It is Python on the same two cores as the server: fine at hundreds of requests per second, not a
  throughput tool; `send_lag_ms` says how late it sent (the generator itself falling behind).
* `served(command, port)` starts a server, waits until it answers and stops it (its process group) after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"


def percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3),
            "max_ms": round(float(values.max()), 3)}


def ensure_wrk() -> str:
    subprocess.run(["bash", str(ROOT / "infra" / "wrk.sh")], check=True, capture_output=True)
    return "wrk"


def closed_loop(url: str, concurrency: int, seconds: float, method: str = "GET",
                body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One wrk run (one thread, `concurrency` keep-alive connections); latencies in milliseconds."""
    env = dict(os.environ)
    if body is not None:
        env.update(WRK_METHOD=method, WRK_BODY=json.dumps(body))
    command = [ensure_wrk(), "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
               "-s", str(WRK_SCRIPT), url]
    for name, value in (headers or {}).items():
        command[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=seconds + 30).stdout
    line = next(row for row in out.splitlines() if row.startswith("WRK_JSON "))
    return json.loads(line.removeprefix("WRK_JSON "))


class Connection:
    """One keep-alive HTTP/1.1 connection of a load generator."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request, read its answer: (status, body); bodies need a Content-Length (no chunking)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body


def _request_bytes(url: str, method: str, body: dict[str, Any] | None,
                   headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {target} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            f"Content-Length: {len(payload)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()))
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return parts.hostname or "127.0.0.1", parts.port or 80, (head + "\r\n").encode() + payload


#: `classify(status, body)`: a label for the answer (e.g. its degradation rung), None for no label.
Classify = Callable[[int, bytes], str | None]


async def _open_loop(urls: Sequence[str], rate: float, seconds: float, method: str,
                     bodies: Sequence[dict[str, Any]] | None, headers: dict[str, str], seed: int | None,
                     classify: Classify | None, timeout_s: float) -> dict[str, Any]:
    count = max(len(urls), len(bodies or ()))
    requests = [_request_bytes(urls[i % len(urls)], method, bodies[i % len(bodies)] if bodies else None, headers)
                for i in range(count)]
    host, port, _ = requests[0]
    total = int(rate * seconds)
    order = (np.random.default_rng(seed).integers(0, count, total) if seed is not None
             else np.arange(total) % count)
    idle: list[Connection] = []
    latencies: list[float] = []
    labels: list[str | None] = []
    statuses: dict[int, int] = {}
    errors = timeouts = 0
    lag_ms = 0.0

    async def one(due: float, request: bytes) -> None:
        nonlocal errors, timeouts
        connection = None
        try:
            connection = idle.pop() if idle else Connection(*await asyncio.open_connection(host, port))
            status, body = await asyncio.wait_for(connection.exchange(request), timeout_s)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            errors += 1
            timeouts += isinstance(exc, TimeoutError)
            if connection is not None:
                connection.writer.close()
            return
        latencies.append((time.perf_counter() - due) * 1e3)
        statuses[status] = statuses.get(status, 0) + 1
        labels.append(classify(status, body) if classify is not None else None)
        idle.append(connection)

    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag_ms = max(lag_ms, -delay * 1e3)
        tasks.append(asyncio.ensure_future(one(due, requests[int(order[i])][2])))
    sent = time.perf_counter() - start
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + timeout_s + 60)
    elapsed = time.perf_counter() - start
    for connection in idle:
        connection.writer.close()
    result: dict[str, Any] = {
        "rate": rate, "requests": total, "targets": count, "draw": "cycle" if seed is None else f"random, seed {seed}",
        "seconds": round(elapsed, 3), "sent_rps": round(total / max(sent, 1e-9), 1),
        "send_lag_ms": round(lag_ms, 3), "rps": round(len(latencies) / elapsed, 1),
        "errors": errors, "timeouts": timeouts, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **percentiles(latencies)}
    if classify is not None:
        by_label: dict[str, list[float]] = {}
        for label, latency in zip(labels, latencies, strict=True):
            by_label.setdefault(str(label), []).append(latency)
        result["answers"] = {label: len(values) for label, values in sorted(by_label.items())}
        result["by_answer"] = {label: percentiles(values) for label, values in sorted(by_label.items())}
    return result


def open_loop(urls: str | Sequence[str], rate: float, seconds: float, method: str = "GET",
              bodies: Sequence[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
              seed: int | None = None, classify: Classify | None = None,
              timeout_s: float = 60.0) -> dict[str, Any]:
    """Fixed-rate load over `urls` (and `bodies` for POSTs); latency from each request's due time.

    Targets are cycled in order, or drawn uniformly at random when `seed` is given (the same seed, the same
    draws). A request unanswered after `timeout_s` counts as an error (and a timeout). With `classify`, the
    result also has `answers` ({label: count}) and `by_answer` ({label: percentiles})."""
    targets = [urls] if isinstance(urls, str) else list(urls)
    run = _open_loop(targets, rate, seconds, method, bodies, headers or {}, seed, classify, timeout_s)
    try:
        import uvloop

        return uvloop.run(run)
    except ImportError:
        return asyncio.run(run)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def served(command: Sequence[str], ready_url: str, log: Path, env: dict[str, str] | None = None,
           timeout_s: float = 180) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` (its own process group, output to `log`) until the block ends; wait for `ready_url`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        started = time.monotonic()
        while not _answers(ready_url):
            code = process.poll()
            if code is not None or time.monotonic() > started + timeout_s:
                why = f"exited with {code}" if code is not None else f"no answer in {timeout_s:.0f} s"
                raise RuntimeError(f"{' '.join(command)} did not answer {ready_url} ({why}); see {log}")
            time.sleep(0.5)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
