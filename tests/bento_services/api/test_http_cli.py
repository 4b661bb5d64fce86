"""`recsys serve` starts the API on serving.host:serving.port and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.bento_services.conftest import closed_port


def test_recsys_serve_answers_and_stops(tmp_path: Path) -> None:
    port = closed_port()
    env = {**os.environ, "RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_SERVING__PORT": str(port)}
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()[0]
                time.sleep(0.3)
        assert health.json() == {"status": "ok"}
        # Nothing imported or built: the catalog cannot check the user, and the answer degrades to popular.
        answer = httpx.get(f"http://127.0.0.1:{port}/recommendations", params={"user_id": "u1"},
                           headers={"X-API-Key": "dev-key"})
        assert answer.status_code == 200 and answer.headers["X-Degradation"] == "popular", answer.text
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    assert "Application shutdown complete" in output
