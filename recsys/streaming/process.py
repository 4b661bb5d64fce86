"""A consumer as a process (`recsys consume NAME`): the Kafka loop, its Prometheus endpoint, clean stop on
SIGTERM/SIGINT (the batch in hand is finished and committed), and the supervisor that runs one process per
consumer when several are named (`make consumers`)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from recsys.settings import Settings

log = logging.getLogger(__name__)


def metrics_port(settings: Settings, name: str) -> int:
    from recsys.backends import CONSUMERS

    return settings.streaming.metrics_port + CONSUMERS.index(name)


def serve_consumer(settings: Settings, name: str, port: int | None = None) -> None:
    """Run consumer `name` on Kafka until SIGTERM or SIGINT."""
    from prometheus_client import start_http_server

    from recsys.backends import open_consumer
    from recsys.streaming.kafka_runner import KafkaRunner
    from recsys.streaming.metrics import REGISTRY

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    wanted = metrics_port(settings, name) if port is None else port
    try:
        server, _ = start_http_server(wanted, addr=settings.serving.host, registry=REGISTRY)
    except OSError:  # another member of this consumer on this machine holds the port: take any free one
        server, _ = start_http_server(0, addr=settings.serving.host, registry=REGISTRY)
    log.info("consumer %s: metrics on http://%s:%d/metrics", name, settings.serving.host, server.server_port)
    print(f"consumer {name}: group {settings.streaming.group_prefix}{name}, "
          f"metrics http://{settings.serving.host}:{server.server_port}/metrics", flush=True)
    KafkaRunner(open_consumer(settings, name), settings, stop).run()
    server.shutdown()


def supervise(names: Sequence[str], cli_args: Sequence[str]) -> int:
    """One child process per consumer (`python -m cli <cli_args> consume NAME`); SIGTERM stops them all.

    A child that dies is started again after a second (its group hands its partitions over meanwhile).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "cli", *cli_args, "consume", name])

    children = {name: start(name) for name in names}
    while not stop.wait(1.0):
        for name, child in list(children.items()):
            if child.poll() is not None:
                log.warning("consumer %s exited with %s; starting it again", name, child.returncode)
                time.sleep(1.0)
                children[name] = start(name)
    for child in children.values():
        child.terminate()
    for child in children.values():
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0
