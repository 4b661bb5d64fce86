"""Helpers shared by the benchmark scripts: a cached synthetic dataset and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingestion.synthetic import SyntheticConfig, generate
from recsys.settings import ROOT_DIR

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = ROOT_DIR / "var" / "bench"


def synthetic(config: SyntheticConfig) -> Path:
    """Generate once per configuration; later runs reuse the files."""
    folder = CACHE / f"synthetic-{config.users}u-{config.items}i-{config.interactions}e-{config.seed}"
    if not (folder / ".complete").exists():
        generate(config, folder)
        (folder / ".complete").touch()
    return folder


def machine() -> dict[str, Any]:
    """The measuring machine: cores, CPU model, memory, OS and Python (what a figure depends on)."""
    found: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "system": f"{platform.system()} {platform.release()} {platform.machine()}"}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        found["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                            if line.startswith("model name"))
        meminfo = Path("/proc/meminfo").read_text().split()
        found["memory_gib"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return found


def git_commit() -> dict[str, Any]:
    """HEAD of the checkout measured and the tracked files that differ from it (uncommitted changes measured too)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30).stdout.rstrip()

    try:
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed), "changed": changed}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "changed": None}


def record(name: str, figures: dict[str, Any], path: Path | None = None) -> None:
    """Write `figures` with the date, machine and git commit to `path` (default bench/results/<name>.json)."""
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_commit(),
        **figures,
    }
    target = path or RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
