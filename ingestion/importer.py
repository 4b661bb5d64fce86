"""Import a source into the lake, the catalog store and the interaction store.

Two passes: the first reads and checks everything (types, timestamps, duplicate ids, references to
unknown items) and writes nothing; the second writes. Bad input therefore leaves every store as it
was. Every write is keyed (event_id, item_id, user_id), so importing the same data again changes
no count; an import interrupted by a server failure can simply be run again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.sources import Source
from recsys.progress import progress
from recsys.stores import CatalogStore, InteractionStore, Lake

#: Users with fewer interactions than this count as new (cold start).
NEW_USER_BELOW = 5
#: Engagement level thresholds on total interactions: below the first is low, from the second high.
ENGAGEMENT_THRESHOLDS = (20, 100)


@dataclass
class ImportReport:
    source: str
    events_read: int = 0
    events_new_in_lake: int = 0
    items: int = 0
    users: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        total = sum(self.seconds.values())
        return self.events_read / total if total else 0.0


class Importer:
    def __init__(
        self, catalog: CatalogStore, interactions: InteractionStore, lake: Lake, show_progress: bool = True
    ) -> None:
        self.catalog, self.interactions, self.lake = catalog, interactions, lake
        self.show_progress = show_progress

    def run(self, source: Source) -> ImportReport:
        report = ImportReport(source.name)
        started = time.perf_counter()
        items, users = source.items(), source.users()
        known = set(items["item_id"]) if items is not None else set()
        known |= self.catalog.item_ids()
        report.events_read = self._check_interactions(source, known)
        report.seconds["validate"] = time.perf_counter() - started

        touched_users: set[str] = set()
        touched_items: set[str] = set(known if items is not None else ())
        with progress("writing interactions", source.size_hint() or report.events_read, self.show_progress) as advance:
            for part in source.interaction_chunks():
                chunk = part.frame
                step = time.perf_counter()
                report.events_new_in_lake += self.lake.write_interactions(chunk)
                report.seconds["lake"] = report.seconds.get("lake", 0.0) + time.perf_counter() - step
                step = time.perf_counter()
                self.interactions.write(chunk)
                report.seconds["interaction_store"] = (
                    report.seconds.get("interaction_store", 0.0) + time.perf_counter() - step
                )
                touched_users.update(chunk["user_id"].unique())
                touched_items.update(chunk["item_id"].unique())
                advance(len(chunk))

        step = time.perf_counter()
        user_rows = self._user_rows(touched_users, users)
        item_stats = self._item_stats(touched_items)
        self.catalog.write(items=items, users=user_rows, item_stats=item_stats)
        report.items, report.users = (len(items) if items is not None else 0), len(user_rows)
        report.seconds["catalog"] = time.perf_counter() - step
        step = time.perf_counter()
        if items is not None:
            self.lake.write_snapshot("items", items)
        self.lake.write_snapshot("users", user_rows)
        report.seconds["snapshots"] = time.perf_counter() - step
        return report

    def _check_interactions(self, source: Source, known_items: set[str]) -> int:
        rows = 0
        with progress("checking interactions", source.size_hint(), self.show_progress) as advance:
            for chunk in source.interaction_chunks():
                unknown = ~chunk.frame["item_id"].isin(known_items)
                if known_items and unknown.any():
                    row = int(chunk.frame.index[unknown.to_numpy()][0])
                    item = chunk.frame.at[row, "item_id"]
                    raise chunk.file.error(
                        f"item {item!r} is not in the items file or the catalog", row=row, column=chunk.item_column
                    )
                chunk = chunk.frame
                rows += len(chunk)
                advance(len(chunk))
        return rows

    def _user_rows(self, user_ids: set[str], profiles: pd.DataFrame | None) -> pd.DataFrame:
        """Users as the events show them (first and last activity, totals), plus any profile given."""
        events = self.lake.interactions(
            filter=pc.is_in(pc.field("user_id"), value_set=pa.array(sorted(user_ids), pa.string())),
            columns=["user_id", "event_time"],
        )
        stats = events.group_by("user_id").aggregate(
            [("event_time", "min"), ("event_time", "max"), ("event_time", "count")]
        ).to_pandas()
        users = pd.DataFrame({
            "user_id": stats["user_id"],
            "created_at": stats["event_time_min"],
            "last_active_at": stats["event_time_max"],
            "total_interactions": stats["event_time_count"],
        })
        if profiles is not None:
            users = profiles.merge(users, on="user_id", how="outer", suffixes=("", "_seen"))
            seen = users.pop("created_at_seen")
            given = pd.to_datetime(users["created_at"], utc=True)
            users["created_at"] = given.where(given.notna(), seen)
        users["total_interactions"] = users["total_interactions"].fillna(0).astype("int64")
        low, high = ENGAGEMENT_THRESHOLDS
        users["engagement_level"] = pd.cut(
            users["total_interactions"], [-1, low - 1, high - 1, float("inf")], labels=["low", "medium", "high"]
        ).astype(str)
        users["is_new_user"] = users["total_interactions"] < NEW_USER_BELOW
        return users.sort_values("user_id", ignore_index=True)

    def _item_stats(self, item_ids: set[str]) -> pd.DataFrame:
        """Popularity of the touched items, from everything the lake holds for them."""
        events = self.lake.interactions(
            filter=pc.is_in(pc.field("item_id"), value_set=pa.array(sorted(item_ids), pa.string())),
            columns=["item_id", "action_type", "value", "event_time"],
        ).to_pandas()
        grouped = events.groupby("item_id")
        stats = pd.DataFrame({
            "interaction_count": grouped.size(),
            "view_count": events[events["action_type"] == "view"].groupby("item_id").size(),
            "avg_rating": events[events["action_type"] == "rate"].groupby("item_id")["value"].mean().round(2),
            "first_seen": grouped["event_time"].min(),
        }).reindex(sorted(item_ids))
        stats["interaction_count"] = stats["interaction_count"].fillna(0).astype("int64")
        stats["view_count"] = stats["view_count"].fillna(0).astype("int64")
        return stats.rename_axis("item_id").reset_index()
