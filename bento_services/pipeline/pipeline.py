"""The request pipeline: assignment, layer 1, retrieve, features, score, post-process, order.

`build_pipeline(settings)` loads everything the request path reads from memory (index, popularity,
item attributes, item feature rows) and opens the stores it reads per request (catalog user row,
history, user vector, "not interested"). `recommend` always answers, degrading rung by rung:

- ranker fails or times out        -> candidate scores   (`candidate_scores`)
- candidate generation / ANN fails -> precomputed list    (`precomputed`)
- features unavailable             -> typed defaults      (`default_features`)
- all else                         -> popular items       (`popular`, kept in memory)

A user with nothing to personalize from yet (not in the catalog, or registered but never seen in an
event, and no live session) gets the `cold_start` rung: the popular items of their onboarding
categories, then the popular ones, from memory.

A precomputed hit for a user whose arm does not change ranking is the cached path (`cached=True`).

Overload makes a request cheaper, never dearer: a request that has waited `serving.cheap_after_share` of
`serving.request_budget_ms` before the full path (to start, or between the lookup and layer-1 read), or
whose layer-1 read timed out or found its threads busy, is answered from its precomputed list
(`precomputed` when its arm ranks differently) or the popular items (`popular`), counted in
`recsys_busy_answers{reason}`. A genuine miss (no list for the user) still takes the full path.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bento_services.metrics import BUSY_ANSWERS, CACHE_LOOKUPS, DEGRADATIONS, STAGE_SECONDS
from bento_services.pipeline.answers import MainSources, Trace, shuffled
from bento_services.pipeline.assignment import Assignment, assign, forced
from bento_services.pipeline.caches import EmbeddingCache
from bento_services.pipeline.connections import Connection
from bento_services.pipeline.contracts import (
    Degradation,
    Ranker,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
)
from bento_services.pipeline.deployments import Rollout, deployment_of
from bento_services.pipeline.features import FeatureAssembler, open_assembler, service_of
from bento_services.pipeline.retrieve import (
    ServingTables,
    current_folder,
    load_serving_tables,
)
from bento_services.pipeline.score import below_ranked, candidate_scores, rank_scores
from bento_services.pipeline.stages import BUSY_REASONS, StageFailed, StageRunner
from bento_services.pipeline.upkeep import TablesUpkeep
from recsys.backends import (
    open_activity,
    open_catalog,
    open_exclusions,
    open_interactions,
    open_precomputed,
    open_user_vectors,
)
from recsys.errors import StoreUnavailableError
from recsys.models.candidates import Candidate
from recsys.serving_log import new_request_id
from recsys.settings import Settings
from recsys.stores import CatalogStore, InteractionStore, UserVectorStore
from recsys.stores.activity import Activity, ActivityStore
from recsys.stores.catalog import Recommendation
from recsys.stores.exclusions import ExclusionStore
from recsys.stores.precomputed import PrecomputedStore, source_of

log = logging.getLogger(__name__)
HISTORY_LIMIT = 500
#: Candidates a request keeps past its ranked head and twice its length: filler for the items post-processing
#: drops (exclusions, deny list, inactive); the ~1,000 merged beyond that could never be shown.
KEEP_MARGIN = 50


class RecommendationPipeline(TablesUpkeep):
    """`RecommendationService` over in-memory tables (kept current by `TablesUpkeep`) and per-thread store
    connections."""

    def __init__(self, settings: Settings, tables: ServingTables, ranker: Ranker | None,
                 assembler: FeatureAssembler | None, variant_rankers: Mapping[str, Ranker] | None = None) -> None:
        self.settings, self.assembler = settings, assembler
        self.rollout = Rollout(deployment_of(settings, tables, ranker))  # the deployments served (`TablesUpkeep`)
        self.variant_rankers = dict(variant_rankers or {})
        serving = settings.serving
        self._stop = threading.Event()
        self.runner = StageRunner(serving.stage_timeout_ms, inline=serving.inline_stages)
        self.catalog: Connection[CatalogStore] = Connection("catalog", lambda: open_catalog(settings))
        self.interactions: Connection[InteractionStore] = Connection(
            "interaction store", lambda: open_interactions(settings))
        self.vectors: Connection[UserVectorStore] = Connection("user vectors", lambda: open_user_vectors(settings))
        self.exclusions: Connection[ExclusionStore] = Connection("not-interested store",
                                                                 lambda: open_exclusions(settings))
        self.sessions: Connection[ActivityStore] = Connection("session store",
                                                              lambda: open_activity(settings, "session"))
        self.embeddings = EmbeddingCache(self.vectors.store, serving.embedding_cache_ttl_seconds)
        self.layer1: list[PrecomputedStore] = open_precomputed(settings, self.catalog.store)
        # The new-items watch: one swap of the tables at a time (it and `refresh`), where it stopped reading, the
        # newest catalog row of each item it changed (re-applied over a refreshed artifact), and the rows it
        # could not place (not tried again until their row changes).
        self._swap = threading.Lock()
        self._items_since: datetime | None = None
        self._catalog_items: dict[str, dict[str, Any]] = {}
        self._unplaced: dict[str, object] = {}

    # -- the service ------------------------------------------------------------------------------------
    def recommend(self, request: RecommendationRequest, use_precomputed: bool = True) -> RecommendationResponse:
        """Always answers; a new user (see `_is_new`) gets the cold-start rung, never an error. The whole request
        runs on the deployment it got at its start (`pinned`); a canary's users skip layer 1 (stable's lists)."""
        if not self._pinned:
            pinned = self.pinned(request.user_id)
            return pinned.recommend(request, use_precomputed and not pinned.on_canary)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        experiments = self.settings.serving.experiments
        arm = assign(request.user_id, experiments) if request.variant is None else forced(
            request.user_id, request.variant, experiments)
        trace = Trace(new_request_id(), self.settings.monitoring.feature_sample_rate)
        user, known, excluded, activity = self._lookup(request.user_id, timings)
        if not activity and _is_new(user, known) and (user is None or not self._has_history(request.user_id, timings)):
            onboarding = _categories(user.get("preferred_categories") if user else None)
            return self._respond(request, self._popular(request, excluded, onboarding), arm, "popular",
                                 Degradation.COLD_START, timings, started, trace)
        now_ms = int((request.at or datetime.now(UTC)).timestamp() * 1000)
        late = self._late(request, timings)
        busy = False
        if use_precomputed and self.settings.serving.precomputed_reads and (not arm.changes_ranking or late):
            cached, busy = self._layer1(request, excluded, timings)
            if cached is not None:
                cached = self._with_session(cached, activity, now_ms, request.n, excluded)
                if arm.changes_ranking:  # not this arm's cached answer: the cheap rung of a late request
                    BUSY_ANSWERS.labels("deadline").inc()
                    return self._respond(request, cached, arm, self.tables.version, Degradation.PRECOMPUTED,
                                         timings, started, trace)
                return self._respond(request, cached, arm, self.tables.version, Degradation.FULL, timings, started,
                                     trace, cached=True)
        if busy or late or self._late(request, timings):  # overload makes a request cheaper, never dearer
            BUSY_ANSWERS.labels("layer1_busy" if busy else "deadline").inc()
            items = self._with_session(self._popular(request, excluded), activity, now_ms, request.n, excluded)
            return self._respond(request, items, arm, "popular", Degradation.POPULAR, timings, started, trace)
        items, version, level = self._full_path(request, user, arm, excluded, timings, activity, trace)
        items = self._with_session(items, activity, now_ms, request.n, excluded)
        return self._respond(request, items, arm, version, level, timings, started, trace)

    def _with_session(self, items: list[RecommendedItem], activity: list[Activity], now_ms: int, n: int,
                      excluded: set[str]) -> list[RecommendedItem]:
        if not activity:
            return items
        return self.live.blend(items, activity, now_ms, n, lambda item: self.post.allowed(item, excluded), excluded)

    def warm_up(self) -> None:
        """Read a history once, outside any budget, before the first request: the first read in a process imports
        the store's modules and opens its connection (hundreds of milliseconds on a busy machine), which left the
        first answer after start-up without the user's history (`user_state` past its budget)."""
        self._safe("interaction store", None, lambda: self._history("\x00warm-up"))

    def not_interested(self, user_id: str, item_id: str) -> None:
        """Persist the exclusion; raises StoreUnavailableError when it could not be written (never dropped)."""
        try:
            self.exclusions.call(lambda s: s.add(user_id, item_id))
        except StoreUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - any driver error means the write did not happen
            raise StoreUnavailableError(f"could not record 'not interested' for user {user_id}: {exc}") from exc

    def readiness(self) -> dict[str, bool]:
        return {
            "candidates": self.retriever is not None,
            "ranker": self.ranker is not None,
            "features": self.assembler is not None,
            "catalog": self.catalog.available,
            "popular": bool(self.tables.popular),
        }

    def close(self) -> None:
        self._stop.set()
        self.runner.close()
        if self.assembler is not None:
            self.assembler.close()
        for store in self.layer1:
            store.close()
        for connection in (self.catalog, self.interactions, self.vectors, self.exclusions, self.sessions):
            connection.close()

    # -- the ladder -------------------------------------------------------------------------------------
    def _full_path(
        self, request: RecommendationRequest, user: dict[str, Any] | None, arm: Assignment, excluded: set[str],
        timings: dict[str, float], activity: list[Activity] | None = None, trace: Trace | None = None,
    ) -> tuple[list[RecommendedItem], str, Degradation]:
        history, vector = self._user_state(request.user_id, timings)
        if activity:  # the recent events, which the interaction store may not hold yet
            known = set(history)
            history = history + [i for i in dict.fromkeys(a.item_id for a in activity) if i not in known]
        if vector is None and self.retriever is not None and len(history) >= self.settings.streaming.fold_in_after:
            vector = self.retriever.fold_in(history)  # a new user: no nightly run yet
        onboarding = _categories(user.get("preferred_categories") if user else None)
        try:
            if self.retriever is None:
                raise StageFailed("candidates", "unavailable", None)
            retriever = self.retriever
            keep = max(self.settings.serving.rank_depth, request.n) + 2 * request.n + KEEP_MARGIN
            candidates = self.runner.run("candidates", lambda: retriever.retrieve(
                vector, history, set(history), onboarding, keep), timings)
        except StageFailed:
            fallback = self._precomputed(request, excluded | set(history), timings)
            if fallback is not None:
                return fallback, self.tables.version, Degradation.PRECOMPUTED
            return self._popular(request, excluded | set(history)), "popular", Degradation.POPULAR
        scores, version, level = self._score(request, self._ranker_for(arm), candidates, vector, timings, trace)
        sources = MainSources(candidates)
        started = time.perf_counter()
        items = self.post.apply([c.item_id for c in candidates], scores, sources, excluded | set(history),
                                request.n, arm.diversity_boost)
        _timed("postprocess", started, timings)
        if not items:
            return self._popular(request, excluded | set(history)), "popular", Degradation.POPULAR
        if len(items) < request.n:
            items = self._top_up(items, request.n, excluded | set(history))
        return items, version, level

    def _ranker_for(self, arm: Assignment) -> Ranker | None:
        """The variant's ranker version when it names one that is loaded; the default ranker otherwise."""
        version = arm.ranker_version
        return self.variant_rankers.get(version, self.ranker) if version is not None else self.ranker

    def _score(self, request: RecommendationRequest, ranker: Ranker | None, candidates: list[Candidate],
               vector: np.ndarray | None, timings: dict[str, float],
               trace: Trace | None = None) -> tuple[np.ndarray, str, Degradation]:
        fused = candidate_scores(candidates)
        assembler, retriever = self.assembler, self.retriever
        if ranker is None or assembler is None or retriever is None or not candidates:
            return fused, self.tables.version, Degradation.CANDIDATE_SCORES
        depth = min(len(candidates), self.settings.serving.rank_depth)
        ids = [c.item_id for c in candidates[:depth]]
        head = fused[:depth]
        level = Degradation.FULL
        now = request.at or datetime.now(UTC)
        if assembler.stale(now):
            return fused, self.tables.version, Degradation.STALE_FEATURES
        try:
            features, _ = self.runner.run("features", lambda: assembler.assemble(
                request.user_id, ids, request.context, now), timings)
        except StageFailed:
            features, level = assembler.defaults(request.user_id, ids), Degradation.DEFAULT_FEATURES
        if trace is not None and trace.sampled:
            trace.features = features
        embedding = retriever.embedding_scores(vector, ids)
        try:
            scores = self.runner.run("ranking", lambda: rank_scores(ranker, features, head, embedding), timings)
        except StageFailed:
            return fused, self.tables.version, Degradation.CANDIDATE_SCORES
        return below_ranked(scores, fused[depth:]), ranker.version, level

    def _precomputed(self, request: RecommendationRequest, excluded: set[str],
                     timings: dict[str, float]) -> list[RecommendedItem] | None:
        """Layer 1, filtered by today's rules; None on a miss or when fewer than `n` items survive."""
        return self._layer1(request, excluded, timings)[0]

    def _layer1(self, request: RecommendationRequest, excluded: set[str],
                timings: dict[str, float]) -> tuple[list[RecommendedItem] | None, bool]:
        """`_precomputed`'s list, and whether a miss was the server being busy (the read timed out or found
        every thread of its stage taken) rather than no list for the user."""
        busy = False
        try:
            found = self.runner.run("precomputed", lambda: self._read_layer1(request.user_id), timings)
        except StageFailed as failed:
            found, busy = [], failed.reason in BUSY_REASONS
        kept = [r for r in found if self.post.allowed(r.item_id, excluded)]
        if not kept or len(kept) < min(request.n, len(found)):
            CACHE_LOOKUPS.labels("precomputed", "miss").inc()
            return None, busy
        CACHE_LOOKUPS.labels("precomputed", "hit").inc()
        return [RecommendedItem(r.item_id, rank, float(r.score), source_of(r.explanation_type),
                                r.explanation_type or "popular")
                for rank, r in enumerate(kept[:request.n], start=1)], False

    def _late(self, request: RecommendationRequest, timings: dict[str, float]) -> bool:
        """Whether the request has waited more than `serving.cheap_after_share` of `serving.request_budget_ms`
        since the server received it (for admission, a thread, its turn between stages; the stages it ran so far,
        each under its own budget, do not count): too late for the full path."""
        if request.received_at is None:
            return False
        serving = self.settings.serving
        waited_ms = (time.monotonic() - request.received_at) * 1000.0 - sum(timings.values())
        return waited_ms > serving.request_budget_ms * serving.cheap_after_share

    def _read_layer1(self, user_id: str) -> list[Recommendation]:
        """The first layer that has a list; a layer that cannot answer counts as a miss."""
        for layer in self.layer1:
            try:
                found = layer.get(user_id)
            except Exception as exc:  # noqa: BLE001 - try the next layer (Redis down: the table)
                log.warning("precomputed layer %s failed: %r", type(layer).__name__, exc)
                continue
            if found:
                return found
        return []

    def _popular(self, request: RecommendationRequest, excluded: set[str],
                 categories: Sequence[str] = ()) -> list[RecommendedItem]:
        """The floor: most popular allowed items, from memory.

        With `categories` (onboarding answers), the most popular items of those categories come first
        (`popular_in_category`, scored by their counts), then the popular ones at score 0.
        """
        items: list[RecommendedItem] = []
        taken: set[str] = set()
        for item_id, count in self._popular_in(categories) if categories else ():
            if len(items) >= request.n:
                break
            if item_id not in taken and self.post.allowed(item_id, excluded):
                items.append(RecommendedItem(item_id, len(items) + 1, float(count), "popularity",
                                             "popular_in_category"))
                taken.add(item_id)
        for item_id, count in self.tables.popular:
            if len(items) >= request.n:
                break
            if item_id not in taken and self.post.allowed(item_id, excluded):
                items.append(RecommendedItem(item_id, len(items) + 1, 0.0 if categories else float(count),
                                             "popularity", "popular"))
        if not items:  # everything excluded: popularity alone, rules relaxed, rather than nothing
            items = [RecommendedItem(i, k, float(c), "popularity", "popular")
                     for k, (i, c) in enumerate(self.tables.popular[:request.n], start=1)]
        return items

    def _popular_in(self, categories: Sequence[str]) -> Iterator[tuple[str, float]]:
        """(item, count) of the categories' popular items, most popular first, from memory: the candidate
        tables' per-category lists when loaded, else the popular list filtered by the items' categories."""
        wanted = list(dict.fromkeys(categories))
        if self.tables.tables is not None:
            by_category = self.tables.tables.popular_by_category
            return heapq.merge(*(by_category.get(c, []) for c in wanted), key=lambda pair: -pair[1])
        category, chosen = self.tables.attributes.category, set(wanted)
        return (pair for pair in self.tables.popular if category.get(pair[0]) in chosen)

    def _top_up(self, items: list[RecommendedItem], n: int, excluded: set[str]) -> list[RecommendedItem]:
        """Fewer candidates survived than asked for: fill with popular items, scored below every ranked one."""
        taken = {i.item_id for i in items}
        for item_id, _ in self.tables.popular:
            if len(items) >= n:
                break
            if item_id not in taken and self.post.allowed(item_id, excluded):
                items.append(RecommendedItem(item_id, len(items) + 1, 0.0, "popularity", "popular"))
                taken.add(item_id)
        return items

    # -- per-request reads ------------------------------------------------------------------------------
    def _lookup(self, user_id: str, timings: dict[str, float]
                ) -> tuple[dict[str, Any] | None, bool | None, set[str], list[Activity]]:
        """The catalog row, whether the catalog knows the user, the "not interested" items and the session
        log, under one budget.

        `known` is False when the catalog answers without the user (a new user: never an error), None
        when the catalog is unreachable or slow (the request is answered from what is available, unchecked).
        Rows are read on every request, never cached: a `POST /users` shows in the very next answer.
        """
        def read() -> tuple[dict[str, Any] | None, bool, set[str], list[Activity]]:
            try:
                user, reachable = self.catalog.call(lambda s: s.get_user(user_id)), True
            except Exception as exc:  # noqa: BLE001 - catalog down: answer from what is available
                log.warning("catalog unreachable, serving user %s unchecked: %r", user_id, exc)
                user, reachable = None, False
            excluded = self._safe("not-interested store", set(), lambda: self.exclusions.call(
                lambda s: s.items(user_id)))
            recent = self._safe("session store", [], lambda: self.sessions.call(lambda s: s.recent(user_id)))
            return user, reachable, excluded, recent

        try:
            user, reachable, excluded, activity = self.runner.run("lookup", read, timings)
        except StageFailed:
            return None, None, set(), []
        return user, (user is not None) if reachable else None, excluded, activity

    def _has_history(self, user_id: str, timings: dict[str, float]) -> bool:
        """Whether the stores hold events or an embedding of a user whose catalog row says none (a row no
        consumer kept up to date): such a user is not new. Asked of registered new users only."""
        history, vector = self._user_state(user_id, timings)
        return bool(history) or vector is not None

    def _user_state(self, user_id: str, timings: dict[str, float]) -> tuple[list[str], np.ndarray | None]:
        """History and embedding under one budget: a hanging store leaves them out, it does not stall."""
        def read() -> tuple[list[str], np.ndarray | None]:
            return self._history(user_id), self._safe("user vectors", None, lambda: self.embeddings.get(user_id))

        try:
            return self.runner.run("user_state", read, timings)
        except StageFailed:
            return [], None

    def _history(self, user_id: str) -> list[str]:
        """The user's item ids, oldest first; empty when the interaction store is unreachable."""
        newest_first = self._safe("interaction store", [], lambda: self.interactions.call(
            lambda s: s.recent_items(user_id, limit=HISTORY_LIMIT)))
        return newest_first[::-1]

    def _safe(self, what: str, default: Any, call: Any) -> Any:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - a per-request read that fails leaves its part out
            log.warning("%s unavailable: %r", what, exc)
            return default

    def _respond(self, request: RecommendationRequest, items: list[RecommendedItem], arm: Assignment, version: str,
                 level: Degradation, timings: dict[str, float], started: float, trace: Trace,
                 cached: bool = False) -> RecommendationResponse:
        if not items:
            items, version, level = self._popular(request, set()), "popular", Degradation.POPULAR
        if arm.shuffle:
            items = shuffled(items, trace.request_id)
        DEGRADATIONS.labels(level.value).inc()
        _timed("total", started, timings)
        return RecommendationResponse(request.user_id, items, arm.name, version, level, cached, timings,
                                      trace.request_id, arm.bucket, self.tables.version, trace.features, request.at)


def _timed(stage: str, started: float, timings: dict[str, float]) -> None:
    elapsed = time.perf_counter() - started
    STAGE_SECONDS.labels(stage).observe(elapsed)
    timings[stage] = round(elapsed * 1000.0, 3)


def _is_new(user: dict[str, Any] | None, known: bool | None) -> bool:
    """Nothing to personalize from: the catalog lacks the user, or has a row no event ever touched (no
    interactions counted by an import, no last_active_at from the `users` consumer). Unchecked (catalog
    down): not new, the full path decides."""
    if known is None:
        return False
    return user is None or (not user.get("total_interactions") and user.get("last_active_at") is None)


def _categories(value: object) -> list[str]:
    if isinstance(value, str):
        return [c for c in value.replace(",", "|").split("|") if c]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(c) for c in value]
    return []


def build_pipeline(settings: Settings, *, candidates_dir: Path | None = None, ranker: Ranker | None = None,
                   variant_rankers: Mapping[str, Ranker] | None = None) -> RecommendationPipeline:
    """Load the serving tables and open the stores.

    `candidates_dir` is a `models/<version>` folder (default: the one `models/CURRENT` names). Without a
    `ranker`, answers are ordered by candidate scores (`candidate_scores`). `variant_rankers` maps the
    `ranker_version` of experiment variants to their rankers (`bento_services.pipeline.rankers.load_rankers`).
    """
    tables = load_serving_tables(settings, candidates_dir or current_folder(settings))
    rankers = dict(variant_rankers or {})
    for variant in settings.serving.experiments:
        if variant.ranker_version is not None and variant.ranker_version not in rankers:
            log.warning("variant %s asks for ranker %s, which is not loaded: it gets the default ranker",
                        variant.name, variant.ranker_version)
    # One assembler, for the service the default ranker was trained on; a variant's ranker trained on another
    # service fails its ranking stage and answers from candidate scores (logged).
    service = service_of(ranker if ranker is not None else next(iter(rankers.values()), None))
    for version, other in rankers.items():
        if service_of(other) != service:
            log.warning("ranker %s reads %s, not %s: its variant gets candidate scores", version, service_of(other),
                        service)
    assembler = open_assembler(settings, service) if ranker is not None or rankers else None
    pipeline = RecommendationPipeline(settings, tables, ranker, assembler, rankers)
    pipeline.warm_up()
    if candidates_dir is None:
        pipeline.watch_current()
    pipeline.watch_items()
    return pipeline
