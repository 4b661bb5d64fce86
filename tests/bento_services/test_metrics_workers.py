"""/metrics is whole with several API workers: each worker's counts, summed, whichever worker is scraped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from recsys.settings import ROOT_DIR

WORKER = """
from bento_services.metrics import DEGRADATIONS, REQUESTS
REQUESTS.labels("/recommendations", "200").inc({count})
DEGRADATIONS.labels("full").inc({count})
"""
SCRAPE = """
import sys
from bento_services.hosting import export_gc_pauses
from bento_services.metrics import exposition
export_gc_pauses()
sys.stdout.write(exposition().decode())
"""


def run(code: str, folder: Path | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if folder is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT_DIR, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout


def test_every_workers_counts_are_summed(tmp_path: Path) -> None:
    for count in (3, 4):  # two workers, each its own process
        run(WORKER.format(count=count), tmp_path)
    scraped = run(SCRAPE, tmp_path)  # a third process answers the scrape
    assert 'recsys_requests_total{endpoint="/recommendations",status="200"} 7.0' in scraped
    assert 'recsys_degradations_total{level="full"} 7.0' in scraped
    assert "recsys_gc_pause_seconds_count" in scraped  # computed at scrape time, by the answering worker


def test_a_single_process_serves_its_own_registry(tmp_path: Path) -> None:
    """Also when the variable appears after start (Feast sets it on import, for its own metrics)."""
    late = f"import os\nos.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(tmp_path)!r}\n"
    scraped = run(WORKER.format(count=2) + late + SCRAPE, None)
    assert 'recsys_requests_total{endpoint="/recommendations",status="200"} 2.0' in scraped
