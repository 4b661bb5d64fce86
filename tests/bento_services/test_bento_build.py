"""`bentoml build` makes a Bento that carries the service, our packages and the models, and serving it works.

Builds in a BENTOML_HOME of the test's own, over the tiny world of the serving tests (synthetic catalog,
hand-made item index saved as the `recsys-candidates` model), exports the Bento, imports it into an empty
home, serves it there with `bentoml serve <tag>` and calls the API through HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.loadgen import served
from bento_services.models import CANDIDATES_MODEL, save_candidates
from bento_services.requirements import closure
from recsys.settings import ROOT_DIR
from tests.bento_services.pipeline_data import VERSION, build_world
from tests.conftest import make_settings

BENTOML = str(Path(sys.executable).parent / "bentoml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_built_bento_carries_models_and_serves(tmp_path: Path) -> None:
    settings = make_settings("local", tmp_path)
    world = build_world(settings, tmp_path)
    home = tmp_path / "bentoml"
    assert save_candidates(world.folder, home) == f"{CANDIDATES_MODEL}:{VERSION}"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           "RECSYS_PROFILE": "local", "RECSYS_DATA_DIR": str(settings.data_path)}

    out = subprocess.run([BENTOML, "build", "--output", "tag"], cwd=ROOT_DIR, env=env, check=True,
                         capture_output=True, text=True, timeout=180).stdout
    tag = out.strip().splitlines()[-1].removeprefix("__tag__:")
    info = json.loads(subprocess.run([BENTOML, "get", tag, "-o", "json"], env=env, check=True,
                                     capture_output=True, text=True, timeout=60).stdout)
    assert [m["tag"] for m in info["services"][0]["models"]] == [f"{CANDIDATES_MODEL}:{VERSION}"]
    src = home / "bentos" / tag.replace(":", "/") / "src"
    shipped = sorted(p.name for p in src.iterdir() if p.is_dir())
    assert shipped == ["bento_services", "feature_repo", "recsys"]  # no builder, no CLI
    requirements = (home / "bentos" / tag.replace(":", "/") / "env" / "python" / "requirements.txt").read_text()
    names = {line.split("==")[0] for line in requirements.splitlines() if line and not line.startswith("#")}
    assert names == {pin.name for pin in closure()}
    assert not names & {"pyspark", "pytest", "ruff", "mypy", "implicit", "scikit-learn", "matplotlib", "typer"}

    # The exported archive carries the models: serve it from a fresh home whose model store is empty.
    archive = tmp_path / "recsys.bento"
    subprocess.run([BENTOML, "export", tag, str(archive)], env=env, check=True, capture_output=True, timeout=120)
    env["BENTOML_HOME"] = str(tmp_path / "fresh")
    subprocess.run([BENTOML, "import", str(archive)], env=env, check=True, capture_output=True, timeout=120)
    assert (tmp_path / "fresh" / "models" / CANDIDATES_MODEL / VERSION / "item_index" / "meta.json").is_file()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with served([BENTOML, "serve", tag, "--host", "127.0.0.1", "--port", str(port)], f"{base}/healthz",
                tmp_path / "serve.log", env=env, timeout_s=150):
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"  # ours, not BentoML's probe
        # A cold server's first answer may come from a cheaper rung by design (its first store reads can spend the
        # request's budget on a loaded machine: popular items); the carried models answer the ones after it.
        versions = []
        for _ in range(5):
            answer = httpx.get(f"{base}/recommendations", params={"user_id": world.warm_user, "n": 10},
                               headers={"X-API-Key": "dev-key"}, timeout=30)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert len(body["items"]) == 10
            versions.append(body["model_version"])
            if body["model_version"] == VERSION:
                break
        assert versions[-1] == VERSION, versions
        assert answer.headers["X-Experiment"] == body["variant"]
        assert httpx.get(f"{base}/recommendations", params={"user_id": world.warm_user},
                         headers={"X-API-Key": "wrong"}).status_code == 401
        for page in ("/playground", "/playground/app.js", "/playground/app.css"):  # its files are in the Bento
            assert httpx.get(f"{base}{page}").status_code == 200, page
