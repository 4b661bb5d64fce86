"""A throwaway Feast repository for the feature-store benchmarks, on the project's Redis.

One user view and one item view of 20 float features each (the shape Feast's own figures quote),
a feature service over both, and Parquet tables of N rows.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from bench.common import CACHE
from recsys.settings import Settings

FEATURES = 20
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFINITIONS = '''
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)


def view(name, entity):
    source = FileSource(name=f"{name}_source", path=f"data/{name}/part-0.parquet", timestamp_field="event_timestamp")
    return FeatureView(name=name, entities=[entity], ttl=timedelta(days=3650), source=source, online=True,
                       schema=[Field(name=f"f{k}", dtype=Float64) for k in range(FEATURES)])


user_bench = view("user_bench", user)
item_bench = view("item_bench", item)
bench_v1 = FeatureService(name="bench_v1", features=[user_bench, item_bench])
'''.replace("FEATURES", str(FEATURES))


def build_repo(settings: Settings, rows: int, name: str = "feature_repo") -> Settings:
    """Write the repository and its tables; return settings that point at it (services profile)."""
    repo = CACHE / name
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "data").mkdir(parents=True)
    (repo / "definitions.py").write_text(DEFINITIONS)
    (repo / "feature_store.yaml").write_text(
        "project: bench\nprovider: local\nregistry: data/registry.db\n"
        f"online_store:\n  type: redis\n  connection_string: {settings.redis.host}:{settings.redis.port}\n"
        "offline_store:\n  type: duckdb\nentity_key_serialization_version: 3\n"
    )
    rng = np.random.default_rng(0)
    for view, key, prefix in (("user_bench", "user_id", "u"), ("item_bench", "item_id", "i")):
        frame = pd.DataFrame(rng.random((rows, FEATURES)), columns=[f"f{k}" for k in range(FEATURES)])
        frame.insert(0, key, [f"{prefix}{k}" for k in range(rows)])
        frame["event_timestamp"] = NOW - timedelta(days=1)
        (repo / "data" / view).mkdir()
        frame.to_parquet(repo / "data" / view / "part-0.parquet", index=False)
    features = settings.features.model_copy(update={
        "repo_path": repo, "project": "bench", "services_yaml": repo / "feature_store.yaml"})
    return settings.model_copy(update={"profile": "services", "features": features})


def clear_redis(settings: Settings) -> None:
    import redis

    client = redis.Redis(host=settings.redis.host, port=settings.redis.port, db=settings.redis.db)
    for key in client.scan_iter(match=b"*bench", count=10_000):
        client.delete(key)
