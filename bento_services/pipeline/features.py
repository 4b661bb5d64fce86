"""Stage two: the ranker's features for one user and their candidates, through the service the ranker was
trained on (its model's `feature_service`; `ranker_v2` for new rankers, `ranker_v1` before).

Values come from the fast online path (item rows in memory, the user row through the layer-3
cache); missing and stale values take their typed defaults. When the online store cannot answer,
`defaults` gives the same layout with every value at its default, and the answer is marked
`default_features`.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from bento_services.pipeline.caches import CachedOnlineFeatures
from bento_services.pipeline.contracts import RequestContext
from recsys.features.service import RANKER_SERVICE, ServiceLayout, fill_defaults, fresh_share
from recsys.features.store import open_feature_store
from recsys.settings import Settings

log = logging.getLogger(__name__)
REFRESH_SECONDS = 300.0
Features = dict[str, list[Any]]


class FeatureAssembler:
    """Feature assembly for ranking; item tables reloaded in the background, never inside a request."""

    def __init__(self, online: CachedOnlineFeatures, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.online = online
        self.layout: ServiceLayout = online.layout
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_loop, args=(refresh_seconds,), daemon=True,
                                           name="recsys-feature-refresh")
        self._refresher.start()

    def assemble(self, user_id: str, item_ids: list[str], context: RequestContext,
                 now: datetime) -> tuple[Features, float]:
        """Feature columns (`view__feature`, one entry per item), defaults where values are missing or stale,
        and the share of stored values that were fresh (`fresh_share`)."""
        request = {"request_time": now, "device": context.device or ""}
        values, status = self.online.get(user_id, item_ids, request)
        return fill_defaults(values, status, self.layout.specs), fresh_share(status, self.layout)

    def stale(self, now: datetime) -> bool:
        """The online store stopped being refreshed: an item view's newest row is past its TTL at `now`."""
        return bool(self.online.stale_views(now.timestamp()))

    def defaults(self, user_id: str, item_ids: list[str]) -> Features:
        """The same layout with every feature at its typed default."""
        n = len(item_ids)
        columns: Features = {"user_id": [user_id] * n, "item_id": list(item_ids)}
        columns.update({spec.ref: [spec.default] * n for spec in self.layout.specs})
        return columns

    def _refresh_loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.online.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving the last tables; retry next round
                log.warning("refreshing item features failed: %r", exc)

    def close(self) -> None:
        self._stop.set()


def service_of(ranker: object) -> str:
    """The feature service a ranker was trained on (recorded in its model's metadata)."""
    metadata = getattr(ranker, "metadata", None)
    return str(metadata.get("feature_service", RANKER_SERVICE)) if isinstance(metadata, dict) else RANKER_SERVICE


def open_assembler(settings: Settings, service: str = RANKER_SERVICE) -> FeatureAssembler | None:
    """The assembler of `service` over the profile's online store, item tables loaded; None when the repo is
    not applied."""
    try:
        # Item tables are refreshed by the assembler's own thread: never let a request trigger a reload.
        online = CachedOnlineFeatures(open_feature_store(settings), service,
                                      ttl_seconds=settings.serving.feature_cache_ttl_seconds,
                                      max_age_seconds=float("inf"))
        online.refresh()
    except Exception as exc:  # noqa: BLE001 - without features the ranker runs on defaults or not at all
        log.warning("online features unavailable: %r", exc)
        return None
    return FeatureAssembler(online)
