"""Import throughput (rows/s) into each store, on 1 million synthetic interactions.

Runs the real importer twice: on the `local` profile (SQLite stores) and on the `services` profile
(PostgreSQL, Cassandra), each into empty stores, with the Parquet lake in both. The importer times
each store separately; rows/s is interactions written per second spent in that store.
Needs the servers: `make services-up`.
"""

from __future__ import annotations

import shutil
import sys
import time

from bench.common import CACHE, record, synthetic
from ingestion.generic import GenericSource
from ingestion.importer import Importer
from ingestion.synthetic import SyntheticConfig
from recsys.backends import open_catalog, open_interactions, open_lake
from recsys.settings import Settings
from recsys.stores.interactions_cassandra import cluster

CONFIG = SyntheticConfig(users=50_000, items=20_000, interactions=int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)


def fresh_settings(profile: str) -> Settings:
    base = Settings.load()
    data = CACHE / f"import-{profile}"
    shutil.rmtree(data, ignore_errors=True)
    settings = base.model_copy(update={
        "profile": profile, "data_dir": data,
        "postgres": base.postgres.model_copy(update={"database": "recsys_test"}),
        "cassandra": base.cassandra.model_copy(update={"keyspace": "recsys_bench"}),
    })
    if profile == "services":
        import psycopg

        with psycopg.connect(base.postgres.conninfo(), autocommit=True) as db:
            if not db.execute("SELECT 1 FROM pg_database WHERE datname = 'recsys_test'").fetchone():
                db.execute('CREATE DATABASE "recsys_test"')
        with open_catalog(settings) as catalog:
            catalog.migrate()
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as db:
            db.execute("TRUNCATE users, items, precomputed_recommendations")
        with open_interactions(settings) as store:
            store.migrate()
        session = cluster(settings.cassandra).connect("recsys_bench")
        for table in ("interactions", "item_interactions"):
            session.execute(f"TRUNCATE {table}", timeout=120)
        session.cluster.shutdown()
    return settings


def run(profile: str, source: GenericSource) -> dict[str, float]:
    settings = fresh_settings(profile)
    with open_catalog(settings) as catalog, open_interactions(settings) as interactions:
        catalog.migrate()
        interactions.migrate()
        started = time.perf_counter()
        report = Importer(catalog, interactions, open_lake(settings)).run(source)
        total = time.perf_counter() - started
    rows = report.events_read
    return {
        "interactions": rows,
        "wall_s": round(total, 1),
        "end_to_end_rows_per_s": round(rows / total),
        "validate_rows_per_s": round(rows / report.seconds["validate"]),
        "lake_rows_per_s": round(rows / report.seconds["lake"]),
        "interaction_store_rows_per_s": round(rows / report.seconds["interaction_store"]),
        "catalog_rows": report.users + report.items,
        "catalog_rows_per_s": round((report.users + report.items) / report.seconds["catalog"]),
    }


def main() -> None:
    folder = synthetic(CONFIG)
    source = GenericSource(folder)
    results = {profile: run(profile, source) for profile in ("local", "services")}
    ratio = results["services"]["interaction_store_rows_per_s"] / results["local"]["interaction_store_rows_per_s"]
    record("import_throughput", {
        "dataset": {"users": CONFIG.users, "items": CONFIG.items, "interactions": CONFIG.interactions},
        "stores": {
            "local (SQLite + lake)": results["local"],
            "services (PostgreSQL + Cassandra + lake)": results["services"],
        },
        "cassandra_vs_sqlite_interaction_store": round(ratio, 2),
        "note": "interaction_store rows/s counts each interaction once; it is written to two tables",
    })


if __name__ == "__main__":
    main()
