"""The feature job against a cluster's master URL: on a Spark standalone master and worker (infra/spark.sh, on
loopback, ports of its own) it writes the same tables as in local mode, and it really ran there: the master
records the finished application, the worker ran its executor, and that executor's Python is the project's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark import SparkContext

from ingestion.features.engineering import FeatureJobConfig, run_feature_job, spark_session
from ingestion.generic import GenericSource
from ingestion.importer import Importer
from ingestion.synthetic import SyntheticConfig, generate
from recsys.backends import open_catalog, open_interactions, open_lake
from recsys.settings import ROOT_DIR
from tests.conftest import make_settings

SCRIPT = ROOT_DIR / "infra" / "spark.sh"
KEYS = {"user_features": ["user_id", "event_timestamp"], "item_features": ["item_id", "event_timestamp"],
        "item_cooccurrence": ["item_id", "event_timestamp"]}


@dataclass(frozen=True)
class Cluster:
    master_url: str
    webui: str
    work_dir: Path  # the worker's application folders


@dataclass(frozen=True)
class Runs:
    cluster: Cluster
    written: dict[str, dict[str, int]]  # master -> rows per table
    tables: dict[str, dict[str, pd.DataFrame]]  # master -> table -> frame
    executors: list[tuple[str, str]]  # (sys.executable, cwd) of the Python workers a cluster job ran
    masters: list[str]  # the master of the session each run used


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        holders = [stack.enter_context(socket.socket()) for _ in range(count)]
        for holder in holders:
            holder.bind(("127.0.0.1", 0))
        return [holder.getsockname()[1] for holder in holders]


def spark_script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), action], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=240)


def master_state(cluster: Cluster) -> dict[str, Any]:
    with urllib.request.urlopen(f"{cluster.webui}/json/", timeout=10) as answer:
        state: dict[str, Any] = json.load(answer)
    return state


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and a worker of their own (fresh var folder, free ports), stopped after the module; a cluster that
    does not start fails the module with the script's error and log tail."""
    var_dir = tmp_path_factory.mktemp("spark-var")
    master, master_ui, worker, worker_ui = free_ports(4)
    env = {"RECSYS_VAR_DIR": str(var_dir), "SPARK_MASTER_PORT": str(master), "SPARK_MASTER_WEBUI_PORT": str(master_ui),
           "SPARK_WORKER_PORT": str(worker), "SPARK_WORKER_WEBUI_PORT": str(worker_ui), "SPARK_WORKER_CORES": "2",
           "SPARK_WORKER_MEMORY": "1g"}
    started = time.monotonic()
    result = spark_script("start", env)
    if result.returncode != 0:
        spark_script("stop", env)
        pytest.fail(f"the Spark standalone cluster did not start (`bash infra/spark.sh start`, rc "
                    f"{result.returncode}):\n{result.stderr[-6000:]}")
    print(f"\nSpark master and worker up in {time.monotonic() - started:.1f}s")
    try:
        yield Cluster(f"spark://127.0.0.1:{master}", f"http://127.0.0.1:{master_ui}", var_dir / "spark" / "work")
    finally:
        active = SparkContext._active_spark_context  # a cluster session that a failure left behind
        if active is not None and str(active.master).startswith("spark://"):
            active.stop()
        stopped = spark_script("stop", env)
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def runs(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """One small synthetic lake, the job run on the cluster and then in local mode, each into its own folder."""
    root = tmp_path_factory.mktemp("spark-standalone")
    settings = make_settings("local", root)
    generate(SyntheticConfig(users=60, items=40, interactions=2_000, days=6, categories=4, seed=5), root / "raw",
             show_progress=False)
    with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
        catalog.migrate()
        interactions.migrate()
        Importer(catalog, interactions, open_lake(settings)).run(GenericSource(root / "raw"))
    written, tables, executors, masters = {}, {}, [], []
    for master in (cluster.master_url, "local[2]"):
        output = root / master.replace("/", "_").replace(":", "_") / "features"
        config = FeatureJobConfig(lake=settings.lake_path, output=output, master=master, executor_memory="512m")
        started = time.monotonic()
        written[master] = run_feature_job(config, progress=lambda _: None)
        print(f"{master}: {time.monotonic() - started:.1f}s")
        tables[master] = {name: pd.read_parquet(output / name) for name in KEYS}
        active = SparkContext._active_spark_context
        masters.append(str(active.master) if active is not None else "none")
        if master == cluster.master_url:  # the session is still the cluster's: ask its executors who runs them
            executors = spark_session(master).sparkContext.parallelize(range(4), 2).map(
                lambda _: (sys.executable, os.getcwd())).distinct().collect()
    return Runs(cluster, written, tables, executors, masters)


def comparable(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.drop(columns="created_timestamp").sort_values(keys).reset_index(drop=True)


def test_the_cluster_writes_the_tables_local_mode_writes(runs: Runs) -> None:
    on_cluster, local = runs.cluster.master_url, "local[2]"
    assert runs.masters == [on_cluster, local]
    assert runs.written[on_cluster] == runs.written[local]
    assert all(runs.written[local][name] > 0 for name in KEYS)
    for name, keys in KEYS.items():
        pd.testing.assert_frame_equal(comparable(runs.tables[on_cluster][name], keys),
                                      comparable(runs.tables[local][name], keys), check_exact=False, rtol=1e-9,
                                      obj=name)


def test_the_job_ran_on_the_cluster(runs: Runs) -> None:
    state = master_state(runs.cluster)
    finished = [app for app in state["completedapps"] if app["name"] == "recsys-features"]
    assert len(finished) == 1, state["completedapps"]
    assert finished[0]["state"] == "FINISHED"
    executor_log = runs.cluster.work_dir / finished[0]["id"] / "0" / "stderr"
    assert "Finished task" in executor_log.read_text()


def test_executors_run_the_project_python_on_the_worker(runs: Runs) -> None:
    assert {python for python, _ in runs.executors} == {sys.executable}
    assert {Path(cwd).parent.parent for _, cwd in runs.executors} == {runs.cluster.work_dir}


def test_a_taken_port_fails_the_start_and_leaves_nothing_running(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        master, worker, worker_ui = free_ports(3)
        env = {"RECSYS_VAR_DIR": str(tmp_path), "SPARK_MASTER_PORT": str(master),
               "SPARK_MASTER_WEBUI_PORT": str(taken), "SPARK_WORKER_PORT": str(worker),
               "SPARK_WORKER_WEBUI_PORT": str(worker_ui)}
        result = spark_script("start", env)
    assert result.returncode != 0
    assert f"ERROR: port {taken} on 127.0.0.1 is taken" in result.stderr
    assert not list((tmp_path / "spark").glob("*.pid"))
