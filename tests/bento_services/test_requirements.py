"""The serving set the Bento installs is the closure of the project's own dependencies, nothing more."""

from __future__ import annotations

from bento_services.requirements import closure, render
from recsys.settings import ROOT_DIR


def test_serving_requirements_file_matches_the_installed_closure() -> None:
    written = (ROOT_DIR / "requirements" / "serving.txt").read_text()
    assert written == render(closure()), "stale: run `python -m bento_services requirements`"


def test_serving_set_leaves_the_batch_and_dev_packages_out() -> None:
    serving = {pin.name for pin in closure()}
    everything = {pin.name for pin in closure(extras=["batch", "dev"])}
    assert {"torch", "faiss-cpu", "feast", "bentoml", "redis", "psycopg"} <= serving
    assert {"pyspark", "pytest", "ruff", "implicit", "scikit-learn", "matplotlib", "typer"} <= everything
    assert not serving & {"pyspark", "pytest", "ruff", "mypy", "implicit", "scikit-learn", "matplotlib", "typer"}
