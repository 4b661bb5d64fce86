"""The `recsys` console command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.settings import ROOT_DIR


def recsys(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "RECSYS_DATA_DIR": str(data_dir), **env}
    return subprocess.run([sys.executable, "-m", "cli", *args], env=environ, cwd=ROOT_DIR,
                          capture_output=True, text=True, timeout=600)


def test_generate_import_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    made = recsys("generate", str(out), "--users", "50", "--items", "30", "--interactions", "2000",
                  data_dir=tmp_path / "data")
    assert made.returncode == 0, made.stderr
    imported = recsys("import", str(out), data_dir=tmp_path / "data")
    assert imported.returncode == 0, imported.stderr
    assert "imported 2,000 events (2,000 new), 30 items, 50 users" in imported.stdout
    summary = recsys("summary", data_dir=tmp_path / "data")
    assert summary.returncode == 0 and "2,000" in summary.stdout and "local profile" in summary.stdout


def test_bad_input_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    result = recsys("import", str(tmp_path / "in"), data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "missing required column" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("name", "value", "says"), [
    ("RECSYS_POSTGRES__PROT", "1", "unknown setting RECSYS_POSTGRES__PROT"),
    ("RECSYS_PROFILE", "prod", "profile: Input should be 'local' or 'services'"),
])
def test_bad_settings_exit_non_zero_naming_the_key(name: str, value: str, says: str, tmp_path: Path) -> None:
    result = recsys("summary", data_dir=tmp_path, **{name: value})
    assert result.returncode == 2 and says in result.stderr


def test_a_misspelt_profile_flag_is_refused_not_run_as_local(tmp_path: Path) -> None:
    result = recsys("--profile", "servics", "summary", data_dir=tmp_path)
    assert result.returncode == 2
    assert "profile: Input should be 'local' or 'services'" in result.stderr
