"""The offline feature job: read the lake, build point-in-time feature tables with Spark, write them as Parquet.

Tables (one directory each under ``FeatureJobConfig.output``, Parquet part files only, replaced whole on each run):

* ``user_features`` and ``item_features``: snapshots, see :mod:`ingestion.features.snapshots` for the
  point-in-time rules (a snapshot for day D has ``event_timestamp`` D+1 00:00 UTC and sees only events
  before it; rows only on days a value changes).
* ``item_cooccurrence``: one snapshot only, as of ``as_of`` (``event_timestamp`` = ``as_of``): each item's top
  K neighbours by cosine co-occurrence in sessions (:func:`item_cooccurrence`). Being a single snapshot, it
  is not point-in-time correct for training on events before ``as_of``.

Every row carries ``created_timestamp`` = when the job ran. The category of an event is its item's
category in the latest catalog snapshot ("unknown" when missing). Events after ``as_of`` are ignored.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyspark import SparkContext, StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ingestion.features.realtime_table import TABLE as REALTIME_TABLE
from ingestion.features.realtime_table import write_realtime_table
from ingestion.features.snapshots import UNKNOWN_CATEGORY, SnapshotPlan, item_features, user_features
from recsys.errors import InvalidInputError
from recsys.stores.lake import Lake

MICROS_PER_MINUTE = 60_000_000
#: Affinity weight of each action type; ``rate`` is (value / 5) * 4, or RATE_WITHOUT_VALUE when unrated.
ACTION_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0, "tag": 2.0, "like": 3.0,
                  "share": 3.0, "skip": 0.0}
RATE_WITHOUT_VALUE = 2.0
#: Co-occurrence counts only a session's first items: pairs grow with the square of a session's length,
#: and a MovieLens "session" of a thousand ratings in one sitting says little about any pair in it.
MAX_SESSION_ITEMS = 100


@dataclass(frozen=True)
class FeatureJobConfig:
    lake: Path                 # lake root
    output: Path               # where feature tables go, normally <lake>/features
    master: str = "local[2]"
    cadence_days: int = 1      # snapshot cadence
    as_of: datetime | None = None   # default: the last event time in the lake
    session_gap_minutes: int = 30
    cooccurrence_neighbours: int = 20
    top_categories: int = 3
    driver_memory: str = "3g"
    executor_memory: str = "1g"     # on a cluster (`spark://...`) only: each executor's heap
    cores_max: int | None = None    # on a cluster only: cores the job takes at most (default: all it offers)


def run_feature_job(config: FeatureJobConfig, progress: Callable[[str], None] = print) -> dict[str, int]:
    """Build every feature table; returns rows written per table."""
    if config.cadence_days < 1:
        raise InvalidInputError(f"cadence_days must be at least 1, not {config.cadence_days}")
    spark = spark_session(config.master, config.driver_memory, config.executor_memory, config.cores_max)
    created_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    events, as_of_us = load_events(spark, config)
    catalog = load_catalog(spark, Lake(config.lake))
    events = enrich_events(events, catalog, config.session_gap_minutes).persist(StorageLevel.MEMORY_AND_DISK)
    plan = SnapshotPlan(cadence_days=config.cadence_days, as_of_us=as_of_us, created_us=created_us)
    progress(f"features as of {_iso(as_of_us)}, snapshot cadence {config.cadence_days} day(s)")
    tables = {
        "user_features": lambda: user_features(events, plan, config.top_categories),
        "item_features": lambda: item_features(events, catalog, plan),
        "item_cooccurrence": lambda: item_cooccurrence(events, plan, config.cooccurrence_neighbours),
    }
    written: dict[str, int] = {}
    try:
        for name, build in tables.items():
            started = time.perf_counter()
            written[name] = write_table(build(), config.output / name)
            progress(f"{name}: {written[name]:,} rows in {time.perf_counter() - started:.1f}s")
    finally:
        spark.catalog.clearCache()  # the events and the intermediates the tables persisted
    # The real-time view's history: the streaming definition over the lake (pandas; one row per event time).
    started = time.perf_counter()
    as_of = datetime.fromtimestamp(as_of_us / 1_000_000, tz=UTC)
    written[REALTIME_TABLE] = write_realtime_table(Lake(config.lake), config.output, as_of)
    progress(f"{REALTIME_TABLE}: {written[REALTIME_TABLE]:,} rows of the days changed since its last build, in "
             f"{time.perf_counter() - started:.1f}s")
    return written


def spark_session(master: str = "local[2]", driver_memory: str = "3g", executor_memory: str = "1g",
                  cores_max: int | None = None) -> SparkSession:
    """A Spark session on ``master``, bound to loopback, UTC, small shuffles, no UI and no ``_SUCCESS`` markers.

    ``master`` is ``local[N]`` (everything runs in this process's JVM) or a cluster's URL, ``spark://host:port``
    (e.g. infra/spark.sh's): executors of ``executor_memory`` each then run on the cluster's workers, taking at
    most ``cores_max`` cores (default: all the cluster offers). The driver binds to 127.0.0.1, so those workers
    must run on this machine; executors read the lake and write the tables at the same absolute paths.
    A live session on another master is stopped first (Spark would otherwise hand it back, master and all).
    """
    # The one place this job touches the process environment: Spark reads SPARK_LOCAL_IP when it starts
    # the JVM (the driver must bind to loopback only), and PySpark reads PYSPARK_PYTHON for its Python workers,
    # which must run this interpreter (the project's venv), not whatever `python3` is first on PATH; executors
    # on a cluster are told the same interpreter.
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    active = SparkContext._active_spark_context
    if active is not None and active.master != master:
        active.stop()
    builder = (
        SparkSession.builder.master(master)
        .appName("recsys-features")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # The lake has a directory per day: list them on the driver, not with a Spark job of one task each.
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "1000000")
        # ... and pack those small files into few read tasks (Spark assumes 4 MiB to open each file).
        .config("spark.sql.files.openCostInBytes", str(256 * 1024))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    )
    if not master.startswith("local"):
        builder = builder.config("spark.executor.memory", executor_memory)
        if cores_max is not None:
            builder = builder.config("spark.cores.max", str(cores_max))
    return builder.getOrCreate()


def load_events(spark: SparkSession, config: FeatureJobConfig) -> tuple[DataFrame, int]:
    """The lake's interactions up to ``as_of`` (default: the last event), with ``us`` = event time in µs."""
    path = config.lake / "interactions"
    if not path.exists():
        raise InvalidInputError(f"no interactions in the lake at {config.lake}; import data first")
    if config.as_of is None:
        as_of_us = _last_event_us(path)
    else:
        as_of = config.as_of if config.as_of.tzinfo else config.as_of.replace(tzinfo=UTC)
        as_of_us = int(as_of.timestamp() * 1_000_000)
    raw = spark.read.parquet(str(path)).drop("event_date").withColumn("us", F.unix_micros("event_time"))
    return raw.where(F.col("us") <= as_of_us), as_of_us


def _last_event_us(interactions: Path) -> int:
    """The last event time, from the newest day partition only (the lake keeps one directory per day)."""
    days = sorted(interactions.glob("event_date=*"))
    if not days:
        raise InvalidInputError(f"no interactions in the lake at {interactions.parent}; import data first")
    times = ds.dataset(days[-1], format="parquet").to_table(columns=["event_time"])["event_time"]
    return int(pc.max(times.cast(pa.timestamp("us", tz="UTC"))).cast(pa.int64()).as_py())


def load_catalog(spark: SparkSession, lake: Lake) -> DataFrame:
    """item_id, category and created_us (catalog created_at in µs, nullable) from the latest items snapshot."""
    schema = T.StructType([T.StructField("item_id", T.StringType()), T.StructField("category", T.StringType()),
                           T.StructField("created_us", T.LongType())])
    items = lake.latest_snapshot("items")
    if items is None or items.empty:
        return spark.createDataFrame([], schema)
    created = pd.Series(pd.NaT, index=items.index, dtype="datetime64[ns, UTC]")
    if "created_at" in items and items["created_at"].notna().any():
        created = pd.to_datetime(items["created_at"], utc=True)
    rows = [
        (str(item), None if pd.isna(category) else str(category), None if pd.isna(stamp) else stamp.value // 1000)
        for item, category, stamp in zip(items["item_id"], items["category"], created)
    ]
    catalog = spark.createDataFrame(rows, schema)
    return catalog.withColumn("category", F.coalesce("category", F.lit(UNKNOWN_CATEGORY)))


def enrich_events(events: DataFrame, catalog: DataFrame, gap_minutes: int) -> DataFrame:
    """Events with day, hour, category, affinity weight and their session (start flag, gap, session key).

    A session is the user's ``session_id`` when the event has one; otherwise a new session starts after a
    gap of more than ``gap_minutes`` between the user's consecutive events. ``gap_us`` is the time since the
    previous event of the same session (0 at a start), so summing it gives session durations at any cut.
    """
    by_session = Window.partitionBy("user_id", "session_id").orderBy("us", "event_id")
    previous = F.lag("us").over(by_session)
    starts = previous.isNull() | (F.col("session_id").isNull() & (F.col("us") - previous > gap_minutes
                                                                   * MICROS_PER_MINUTE))
    enriched = (
        events.join(F.broadcast(catalog.select("item_id", "category")), "item_id", "left")
        .select(
            "user_id", "item_id", "event_id", "us", "action_type", "value", "session_id",
            F.floor(F.col("us") / 86_400_000_000).cast("long").alias("day"),
            F.hour("event_time").alias("hour"),
            F.coalesce("category", F.lit(UNKNOWN_CATEGORY)).alias("category"),
            _weight().alias("weight"),
        )
        .withColumn("new_session", starts.cast("int"))
        .withColumn("gap_us", F.when(F.col("new_session") == 1, F.lit(0)).otherwise(F.col("us") - previous))
        .withColumn("session_seq", F.sum("new_session").over(by_session.rowsBetween(Window.unboundedPreceding, 0)))
    )
    session_key = F.coalesce(F.concat(F.lit("id:"), "session_id"), F.concat(F.lit("gap:"), "session_seq"))
    return enriched.withColumn("session_key", session_key).drop("session_seq", "event_id")


def _weight() -> Column:
    weight = F.when(F.col("action_type") == "rate", F.coalesce(F.col("value") / 5.0 * 4.0, F.lit(RATE_WITHOUT_VALUE)))
    for action, value in ACTION_WEIGHTS.items():
        weight = weight.when(F.col("action_type") == action, F.lit(value))
    return weight.otherwise(F.lit(0.0))


def item_cooccurrence(events: DataFrame, plan: SnapshotPlan, neighbours: int) -> DataFrame:
    """Each item's top ``neighbours`` items by cosine co-occurrence in the same user session, as of ``as_of``.

    score(i, j) = sessions holding both / sqrt(sessions holding i * sessions holding j), sorted descending
    (ties: neighbour id ascending). Only the first MAX_SESSION_ITEMS distinct items of a session count.
    """
    session = ["user_id", "session_key"]
    visits = events.groupBy(*session, "item_id").agg(F.min("us").alias("first_us"))
    position = F.row_number().over(Window.partitionBy(*session).orderBy("first_us", "item_id"))
    visits = visits.withColumn("position", position).where(F.col("position") <= MAX_SESSION_ITEMS)
    visits = visits.select(*session, "item_id")
    visits = visits.persist(StorageLevel.MEMORY_AND_DISK)
    counts = visits.groupBy("item_id").agg(F.count(F.lit(1)).alias("sessions"))
    left = visits.withColumnRenamed("item_id", "a")
    pairs = left.join(visits.withColumnRenamed("item_id", "n"), session).where(F.col("a") < F.col("n"))
    pairs = pairs.groupBy("a", "n").agg(F.count(F.lit(1)).alias("together"))
    pairs = pairs.unionByName(pairs.select(F.col("n").alias("a"), F.col("a").alias("n"), "together"))
    scored = (
        pairs.join(F.broadcast(counts.select(F.col("item_id").alias("a"), F.col("sessions").alias("sa"))), "a")
        .join(F.broadcast(counts.select(F.col("item_id").alias("n"), F.col("sessions").alias("sn"))), "n")
        .select("a", "n", (F.col("together") / F.sqrt(F.col("sa") * F.col("sn"))).alias("score"))
    )
    rank = F.row_number().over(Window.partitionBy("a").orderBy(F.desc("score"), "n"))
    top = scored.withColumn("rank", rank).where(F.col("rank") <= neighbours).groupBy("a").agg(
        F.sort_array(F.collect_list(F.struct((-F.col("score")).alias("negative"), "n"))).alias("ranked"))
    return top.select(
        F.col("a").alias("item_id"),
        F.timestamp_micros(F.lit(plan.as_of_us)).alias("event_timestamp"),
        F.timestamp_micros(F.lit(plan.created_us)).alias("created_timestamp"),
        F.transform("ranked", lambda entry: entry["n"]).alias("neighbours"),
        F.transform("ranked", lambda entry: (-entry["negative"]).cast("float")).alias("neighbour_scores"),
    )


def write_table(frame: DataFrame, target: Path) -> int:
    """Write Parquet to a temporary directory beside ``target``, then swap it in; returns the row count."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    frame.write.mode("overwrite").parquet(str(tmp))
    for crc in tmp.glob(".*.crc"):
        crc.unlink()
    rows = ds.dataset(tmp, format="parquet").count_rows()
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return rows


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat()
