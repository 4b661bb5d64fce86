"""The layers of ARCHITECTURE.md and the declared dependencies hold, checked by the tools `make lint` runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from recsys.settings import ROOT_DIR

BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT_DIR, capture_output=True, text=True,
                          timeout=300)


def test_imports_run_downwards_only() -> None:
    result = _run("lint-imports")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


def test_every_import_is_declared_and_every_declaration_used() -> None:
    result = _run("deptry", ".")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
