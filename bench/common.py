"""Helpers shared by the benchmark scripts: a cached synthetic dataset and result files."""

from __future__ import annotations

import json
import platform
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


def record(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        **figures,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
