"""The server scripts under infra/: a server that cannot start fails the run with its log."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.settings import ROOT_DIR, Settings


@pytest.fixture
def var_dir() -> Iterator[Path]:
    # Under the project's var/ (not /tmp's private pytest folders): PostgreSQL runs as its own user.
    (ROOT_DIR / "var").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="infra-test-", dir=ROOT_DIR / "var"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port held by a plain socket that is not the server the script expects."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def script(name: str, action: str, var_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "RECSYS_VAR_DIR": str(var_dir), **env}
    return subprocess.run(["bash", str(ROOT_DIR / "infra" / f"{name}.sh"), action], env=environ,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("name", "port_key", "log_says"), [
    ("redis", "RECSYS_REDIS__PORT", "Address already in use"),
    ("postgres", "RECSYS_POSTGRES__PORT", "could not bind"),
    ("kafka", "RECSYS_KAFKA__PORT", "Address already in use"),
])
def test_a_server_that_cannot_bind_fails_with_its_log(
    name: str, port_key: str, log_says: str, var_dir: Path, taken_port: int
) -> None:
    extra = {"RECSYS_KAFKA__CONTROLLER_PORT": str(taken_port + 1)} if name == "kafka" else {}
    result = script(name, "start", var_dir, **{port_key: str(taken_port)}, **extra)
    try:
        assert result.returncode != 0
        assert "ERROR" in result.stderr and log_says in result.stderr
    finally:
        script(name, "stop", var_dir, **{port_key: str(taken_port)})


def test_cassandra_refuses_a_taken_port(var_dir: Path, taken_port: int) -> None:
    result = script("cassandra", "start", var_dir, RECSYS_CASSANDRA__PORT=str(taken_port))
    assert result.returncode != 0 and f"127.0.0.1:{taken_port} is already in use" in result.stderr


def test_status_reports_a_server_that_is_down(var_dir: Path, taken_port: int) -> None:
    result = script("redis", "status", var_dir, RECSYS_REDIS__PORT=str(taken_port))
    assert result.returncode == 1 and "redis: down" in result.stdout


def test_start_is_idempotent_and_status_reports_up(var_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    try:
        assert script("redis", "start", var_dir, RECSYS_REDIS__PORT=port).returncode == 0
        again = script("redis", "start", var_dir, RECSYS_REDIS__PORT=port)
        assert again.returncode == 0 and "already up" in again.stderr
        status = script("redis", "status", var_dir, RECSYS_REDIS__PORT=port)
        assert status.returncode == 0 and f"up on 127.0.0.1:{port}" in status.stdout
    finally:
        assert script("redis", "stop", var_dir, RECSYS_REDIS__PORT=port).returncode == 0


def test_postgres_starts_under_a_path_longer_than_a_unix_socket_allows(var_dir: Path) -> None:
    """A checkout can sit anywhere: the server listens on TCP alone, so a long data path does not matter."""
    deep = var_dir / ("a-long-checkout-path-" * 6)
    deep.mkdir()
    deep.chmod(0o755)
    assert len(str(deep / "postgres" / ".s.PGSQL.25432")) > 107
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    try:
        started = script("postgres", "start", deep, RECSYS_POSTGRES__PORT=port)
        assert started.returncode == 0, started.stderr[-2000:]
        status = script("postgres", "status", deep, RECSYS_POSTGRES__PORT=port)
        assert status.returncode == 0 and f"up on 127.0.0.1:{port}" in status.stdout
    finally:
        script("postgres", "stop", deep, RECSYS_POSTGRES__PORT=port)


def test_default_ports_lie_outside_the_ephemeral_range() -> None:
    """A client retrying a stopped server on an ephemeral port can be handed that port and connect to itself."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    settings = Settings()
    ports = {"postgres": settings.postgres.port, "redis": settings.redis.port, "kafka": settings.kafka.port,
             "kafka controller": settings.kafka.controller_port, "cassandra": settings.cassandra.port,
             "cassandra storage": settings.cassandra.storage_port, "cassandra jmx": settings.cassandra.jmx_port,
             "consumer metrics": settings.streaming.metrics_port}
    for name in ("redis", "postgres", "kafka", "cassandra", "kafka_cluster"):
        text = (ROOT_DIR / "infra" / f"{name}.sh").read_text()
        for default in re.findall(r":-([\d,]+)\}", text):
            for port in default.split(","):
                ports[f"{name}.sh {port}"] = int(port)
    assert ports and all(port < low for port in ports.values()), {k: v for k, v in ports.items() if v >= low}
