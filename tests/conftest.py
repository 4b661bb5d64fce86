"""Shared fixtures: settings per profile, isolated stores, and the real servers for `services`.

Tests that take ``profile`` run twice: on the embedded `local` stores and on the real servers
started by `make services-up`. A missing server fails the run with the command to start it; it
never skips.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from recsys.backends import open_catalog, open_interactions
from recsys.settings import ROOT_DIR, Settings
from recsys.stores import CatalogStore, InteractionStore, Lake
from recsys.stores.interactions_cassandra import cluster as cassandra_cluster

# The suite never reads or writes the user's BentoML model store (~/bentoml): one of its own per run,
# set before any test module imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="recsys-tests-bentoml-")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

TEST_DATABASE = "recsys_test"
TEST_KEYSPACE = "recsys_test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        uses_servers = bool({"servers", "kafka_up"} & set(getattr(item, "fixturenames", ())))
        if uses_servers or (callspec is not None and callspec.params.get("profile") == "services"):
            item.add_marker(pytest.mark.services)
    # `slow` tests (a Bento built and served) last: not in the CPU burst of servers that just started.
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


@pytest.fixture(params=["local", "services"])
def profile(request: pytest.FixtureRequest) -> str:
    if request.param == "services":
        request.getfixturevalue("servers")
    return str(request.param)


@pytest.fixture(scope="session")
def kafka_up() -> None:
    """The project's Kafka broker answers; fail loudly otherwise."""
    from recsys.bus.kafka import KafkaBus

    kafka = Settings.load().kafka
    if not KafkaBus(kafka).ready():
        pytest.fail(f"Kafka is not running at {kafka.bootstrap_servers}; start the servers with `make services-up`")


@pytest.fixture(scope="session")
def servers() -> None:
    """The real servers answer, and the test database exists; fail loudly otherwise."""
    base = Settings.load()
    try:
        with psycopg.connect(base.postgres.conninfo(), autocommit=True) as db:
            exists = db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEST_DATABASE,)).fetchone()
            if not exists:
                db.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running ({exc}); start the servers with `make services-up`")
    cluster = cassandra_cluster(base.cassandra)
    try:
        cluster.connect()
    except Exception as exc:  # noqa: BLE001 - any driver failure means the server is not usable
        pytest.fail(f"Cassandra is not running ({exc}); start the servers with `make services-up`")
    finally:
        cluster.shutdown()


def own_feature_repo(settings: Settings, folder: Path) -> Settings:
    """The settings with a fresh copy of feature_repo/ in `folder` and a Feast project of its own."""
    import shutil
    import uuid

    repo = folder / "feature_repo"
    shutil.copytree(ROOT_DIR / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    features = settings.features.model_copy(update={"repo_path": repo, "project": f"t{uuid.uuid4().hex[:10]}"})
    return settings.model_copy(update={"features": features})


def make_settings(profile: str, tmp_path: Path) -> Settings:
    base = Settings.load()
    return base.model_copy(update={
        "profile": profile,
        "data_dir": tmp_path / "data",
        "postgres": base.postgres.model_copy(update={"database": TEST_DATABASE}),
        "cassandra": base.cassandra.model_copy(update={"keyspace": TEST_KEYSPACE}),
    })


@pytest.fixture
def settings(profile: str, tmp_path: Path) -> Settings:
    return make_settings(profile, tmp_path)


@pytest.fixture
def catalog(settings: Settings) -> Iterator[CatalogStore]:
    store = open_catalog(settings)
    store.migrate()
    if settings.profile == "services":
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as db:
            db.execute("TRUNCATE users, items, precomputed_recommendations")
    yield store
    store.close()


@pytest.fixture
def interactions(settings: Settings) -> Iterator[InteractionStore]:
    store = open_interactions(settings)
    store.migrate()
    if settings.profile == "services":
        cluster = cassandra_cluster(settings.cassandra)
        session = cluster.connect(settings.cassandra.keyspace)
        for table in ("interactions", "item_interactions"):
            session.execute(f"TRUNCATE {table}", timeout=60)
        cluster.shutdown()
    yield store
    store.close()


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """ml-latest-small, verified, in the project's data cache (copied from shared/ the first time)."""
    from ingestion.datasets import ensure_movielens

    base = Settings.load()
    ensure_movielens(base.movielens_path, base.shared_data_dir)
    return base.movielens_path


@pytest.fixture
def lake(settings: Settings) -> Lake:
    return Lake(settings.lake_path)
