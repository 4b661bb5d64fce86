"""Point-in-time user and item feature snapshots.

Snapshots are cut at boundaries every ``cadence_days`` days from the Unix epoch (midnight UTC). The snapshot
for a period, e.g. day D at cadence 1, reflects every event with ``event_time`` < D+1 00:00 and carries
``event_timestamp`` = D+1 00:00 exactly: the moment it becomes true. A training event at time t on day D
therefore joins (Feast: latest row with ``event_timestamp`` <= t) a snapshot that never includes later events.

An entity gets a row only at boundaries where one of its values can change: after each period with activity,
and at the first boundary at which events leave the 7-day and the 30-day window (activity day + 7 and + 30
at cadence 1). Between two rows its values are those of the earlier row, which is exactly what a
point-in-time join reads. No boundary past the period that holds ``as_of`` is written; that last snapshot
sees the events up to ``as_of`` only. Window counts at boundary B cover B - N days <= event_time < B.

Approximation: ``category_popularity_rank`` is emitted on the item's own rows only. It ranks the item among
all items of its category by interactions_30d as of that boundary (exact values: an item without a row that
day keeps its latest row's value, which is its true value then); the rank is not refreshed when only other
items change. Ties share a rank (1 + the number of items with more interactions).

Elapsed-time features (days since last interaction, item age) are computed at request or training time from
``last_interaction_at`` and ``first_seen_at``, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

DAY_MICROS = 86_400_000_000
WINDOWS = (7, 30)
ACTION_COUNTS = {"view": "views_total", "click": "clicks_total", "purchase": "purchases_total",
                 "rate": "rates_total", "tag": "tags_total"}
UNKNOWN_CATEGORY = "unknown"  # the category of an item that has none, or is not in the catalog
ENGAGEMENT = ((20, "high"), (5, "medium"))  # interactions_30d thresholds, highest first; below: "low"


@dataclass(frozen=True)
class SnapshotPlan:
    cadence_days: int
    as_of_us: int
    created_us: int

    @property
    def last_boundary(self) -> int:
        """The day index (days since the epoch) of the boundary that closes the period holding ``as_of``."""
        as_of_day = self.as_of_us // DAY_MICROS
        return (as_of_day // self.cadence_days + 1) * self.cadence_days

    def boundaries(self, daily: DataFrame, key: str) -> DataFrame:
        """(key, b): the boundaries at which an entity with activity on ``daily``'s days gets a row."""
        day, cadence = F.col("day"), self.cadence_days
        after_activity = F.floor(day / cadence) * cadence + cadence
        leaving = [F.ceil((day + window + 1) / cadence) * cadence for window in WINDOWS]
        rows = daily.select(key, F.explode(F.array(after_activity, *leaving).cast("array<long>")).alias("b"))
        return rows.where(F.col("b") <= self.last_boundary).distinct()

    def stamps(self) -> list[Column]:
        """event_timestamp (the boundary ``b``) and created_timestamp (when the job ran)."""
        return [F.timestamp_seconds(F.col("b") * 86_400).alias("event_timestamp"),
                F.timestamp_micros(F.lit(self.created_us)).alias("created_timestamp")]


def rolled_up(daily: DataFrame, markers: DataFrame, key: str, sums: list[str], extremes: dict[str, str]) -> DataFrame:
    """Cumulative sums, minima/maxima and 7/30-day counts of ``daily`` (key, day, ...) at each marker (key, b).

    Markers and activity days share one ordered frame per entity; a marker at day index b aggregates the
    activity rows with day < b, so it never sees the period that starts at its own timestamp.
    """
    activity = daily.withColumn("marker", F.lit(False))
    frame = activity.unionByName(markers.select(key, F.col("b").alias("day"), F.lit(True).alias("marker")),
                                 allowMissingColumns=True)
    ordered = Window.partitionBy(key).orderBy("day")
    before = ordered.rangeBetween(Window.unboundedPreceding, -1)
    columns = [F.sum(name).over(before).alias(name) for name in sums]
    columns += [getattr(F, how)(name).over(before).alias(name) for name, how in extremes.items()]
    columns += [F.coalesce(F.sum("interactions_total").over(ordered.rangeBetween(-window, -1)), F.lit(0))
                .cast("long").alias(f"interactions_{window}d") for window in WINDOWS]
    return frame.select(key, F.col("day").alias("b"), "marker", *columns).where("marker").drop("marker")


def user_features(events: DataFrame, plan: SnapshotPlan, top_categories: int) -> DataFrame:
    """One row per user and boundary at which the user's features change."""
    hours = [f"hour_{hour}" for hour in range(24)]
    daily = events.groupBy("user_id", "day").agg(
        F.count(F.lit(1)).alias("interactions_total"),
        *[_count_if(F.col("action_type") == action, name) for action, name in ACTION_COUNTS.items()],
        F.sum(F.when(F.col("action_type") == "rate", F.col("value"))).alias("rating_sum"),
        F.count(F.when(F.col("action_type") == "rate", F.col("value"))).alias("rating_n"),
        F.min("us").alias("first_us"), F.max("us").alias("last_us"),
        F.sum("new_session").cast("long").alias("sessions_total"), F.sum("gap_us").alias("gap_us"),
        *[_count_if(F.col("hour") == hour, name) for hour, name in enumerate(hours)],
    )
    markers = plan.boundaries(daily, "user_id").persist(StorageLevel.MEMORY_AND_DISK)
    sums = ["interactions_total", *ACTION_COUNTS.values(), "rating_sum", "rating_n", "sessions_total", "gap_us",
            *hours]
    rows = rolled_up(daily, markers, "user_id", sums, {"first_us": "min", "last_us": "max"})
    affinity = category_affinity(events, markers, top_categories)
    return rows.join(affinity, ["user_id", "b"], "left").select("user_id", *plan.stamps(), *_user_columns(hours))


def _user_columns(hours: list[str]) -> list[Column]:
    sessions, total = F.col("sessions_total"), F.col("interactions_total")
    weeks = (F.col("last_us") - F.col("first_us")) / (7 * DAY_MICROS)
    hour_counts = F.array(*hours)
    engagement = F.when(F.col("interactions_30d") >= ENGAGEMENT[0][0], ENGAGEMENT[0][1])
    engagement = engagement.when(F.col("interactions_30d") >= ENGAGEMENT[1][0], ENGAGEMENT[1][1]).otherwise("low")
    return [
        total, *[F.col(name) for name in ACTION_COUNTS.values()],
        F.col("interactions_7d"), F.col("interactions_30d"),
        F.when(F.col("rating_n") > 0, F.col("rating_sum") / F.col("rating_n")).alias("avg_rating_given"),
        F.timestamp_micros("first_us").alias("first_interaction_at"),
        F.timestamp_micros("last_us").alias("last_interaction_at"),
        sessions,
        (sessions / F.greatest(F.lit(1.0), weeks)).alias("sessions_per_week"),
        F.when(sessions > 0, total / sessions).alias("avg_session_events"),
        F.when(sessions > 0, F.col("gap_us") / 60_000_000 / sessions).alias("avg_session_minutes"),
        (F.array_position(hour_counts, F.array_max(hour_counts)) - 1).cast("int").alias("preferred_hour"),
        F.coalesce("top_categories", F.lit("")).alias("top_categories"),
        F.coalesce("category_affinity_keys", F.array().cast("array<string>")).alias("category_affinity_keys"),
        F.coalesce("category_affinity_values", F.array().cast("array<float>")).alias("category_affinity_values"),
        engagement.alias("engagement_level"),
    ]


def category_affinity(events: DataFrame, markers: DataFrame, top_categories: int) -> DataFrame:
    """(user_id, b, top_categories, category_affinity_keys, category_affinity_values) at each marker.

    Affinity to a category is the summed action weight of the user's events in it before b; values are
    normalised to sum 1 and sorted by value descending, then category. Categories with zero weight are left out.
    """
    weights = events.groupBy("user_id", "category", "day").agg(F.sum("weight").alias("weight"))
    first = weights.groupBy("user_id", "category").agg(F.min("day").alias("first_day"))
    touched = markers.join(first, "user_id").where(F.col("first_day") < F.col("b"))
    frame = weights.withColumn("marker", F.lit(False)).unionByName(
        touched.select("user_id", "category", F.col("b").alias("day"), F.lit(True).alias("marker")),
        allowMissingColumns=True)
    before = Window.partitionBy("user_id", "category").orderBy("day").rangeBetween(Window.unboundedPreceding, -1)
    totals = frame.select("user_id", "category", F.col("day").alias("b"), "marker",
                          F.sum("weight").over(before).alias("affinity"))
    totals = totals.where(F.col("marker") & (F.col("affinity") > 0))
    grouped = totals.groupBy("user_id", "b").agg(
        F.sort_array(F.collect_list(F.struct((-F.col("affinity")).alias("negative"), "category"))).alias("ranked"),
        F.sum("affinity").alias("total"))
    keys = F.transform("ranked", lambda entry: entry["category"])
    values = F.transform("ranked", lambda entry: (-entry["negative"] / F.col("total")).cast("float"))
    return grouped.select("user_id", "b", F.array_join(F.slice(keys, 1, top_categories), "|").alias("top_categories"),
                          keys.alias("category_affinity_keys"), values.alias("category_affinity_values"))


def item_features(events: DataFrame, catalog: DataFrame, plan: SnapshotPlan) -> DataFrame:
    """One row per item and boundary at which the item's features change."""
    daily = events.groupBy("item_id", "day").agg(
        F.count(F.lit(1)).alias("interactions_total"),
        *[_count_if(F.col("action_type") == action, ACTION_COUNTS[action]) for action in ("view", "click", "purchase")],
        F.count(F.when(F.col("action_type") == "rate", F.col("value"))).alias("rating_count"),
        F.sum(F.when(F.col("action_type") == "rate", F.col("value"))).alias("rating_sum"),
        F.min("us").alias("first_us"),
    )
    markers = plan.boundaries(daily, "item_id")
    sums = ["interactions_total", "views_total", "clicks_total", "purchases_total", "rating_count", "rating_sum"]
    rows = rolled_up(daily, markers, "item_id", sums, {"first_us": "min"})
    rows = rows.join(F.broadcast(catalog), "item_id", "left").withColumn(
        "category", F.coalesce("category", F.lit(UNKNOWN_CATEGORY))).persist(StorageLevel.MEMORY_AND_DISK)
    rows = rows.join(category_rank(rows, plan), ["item_id", "b"])
    views = F.col("views_total")
    return rows.select(
        "item_id", *plan.stamps(), "category", "interactions_total", "interactions_7d", "interactions_30d",
        "views_total", "clicks_total", "purchases_total", "rating_count",
        F.when(F.col("rating_count") > 0, F.col("rating_sum") / F.col("rating_count")).alias("avg_rating"),
        F.when(views > 0, F.col("clicks_total") / views).alias("click_rate"),
        F.when(views > 0, F.col("purchases_total") / views).alias("purchase_rate"),
        F.timestamp_micros(F.coalesce("created_us", "first_us")).alias("first_seen_at"),
        "category_popularity_rank",
    )


def category_rank(rows: DataFrame, plan: SnapshotPlan) -> DataFrame:
    """(item_id, b, category_popularity_rank) for every item row, ranked within the category at b.

    Each row's interactions_30d holds until the item's next row; a positive value is spread over the
    boundaries it holds for, so every (category, b) sees all items then inside their 30-day window.
    """
    cadence = F.lit(plan.cadence_days).cast("long")
    following = F.lead("b").over(Window.partitionBy("item_id").orderBy("b"))
    until = F.coalesce(following, F.lit(plan.last_boundary + plan.cadence_days).cast("long")).alias("until")
    held = F.when(F.col("interactions_30d") > 0, F.sequence(F.col("b"), F.col("until") - cadence, cadence))
    spread = rows.select("item_id", "category", "interactions_30d", "b", until).select(
        "item_id", "category", "interactions_30d", "b", F.explode(held.otherwise(F.array("b"))).alias("at"))
    by_category = Window.partitionBy("category", "at").orderBy(F.desc("interactions_30d"))
    ranked = spread.withColumn("category_popularity_rank", F.rank().over(by_category).cast("int"))
    return ranked.where(F.col("at") == F.col("b")).select("item_id", "b", "category_popularity_rank")


def _count_if(condition: Column, name: str) -> Column:
    return F.sum(F.when(condition, 1).otherwise(0)).cast("long").alias(name)
