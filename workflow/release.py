"""Releases: a passing version to a canary share of users (or straight to stable), promotion 5 -> 50 -> 100,
rollback, and the guardrails that choose between them (`recsys release status|promote|rollback|check`).

The record is `recsys.release` (`models/RELEASE.json`); every serving process follows it, keeping the stable
version and the canary loaded side by side. A version that becomes stable first gets its user vectors written to
the online store and `models/CURRENT` pointed at it (what batch jobs and a restarted server read), then the record.

Guardrails read the serving log of the last `pipeline.guardrail_window_minutes` since the canary got its share,
and tell the two versions apart by the answers' candidate artifact (`candidates_version`; each pipeline run builds
its own). The serving log has no errors (the pipeline always answers): the degraded share stands for them. Latency
is compared like with like: answers computed for a user with history (neither layer 1, which a canary never
uses, nor the cheap cold-start path). Stable's users mostly get precomputed lists, so when stable has too few
computed answers to be a baseline, the canary's p99 is held to the request budget instead.

Every change also tags the runs that made the versions concerned, found in experiment tracking by their version
(`training.tracking.annotate_version`; the run and its registered version): `release` is `stable`, `canary N%`,
or, once out of the release, `rolled back` or `retired`. A tracking failure is reported, the release stands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd

from bento_services.pipeline.retrieve import current_folder
from recsys import serving_log
from recsys.errors import InvalidInputError
from recsys.private.bentoml import model_store
from recsys.release import Release, Version, read_release, write_release
from recsys.settings import PipelineSettings, Settings

RANKER = "ranker"  # recsys.models.ranker.MODEL_NAME, without importing torch
NOT_DEGRADED = ("full", "cold_start")  # cold start is no failure: a user with nothing to personalize from


def stable_version(settings: Settings, home: Path | None = None) -> Version | None:
    """What serves now: the record's stable version, else `models/CURRENT` with `ranker:latest`."""
    release = read_release(settings.data_path)
    if release is not None:
        return release.stable
    folder = current_folder(settings)
    if folder is None:
        return None
    try:
        ranker = str(bentoml.models.get(f"{RANKER}:latest", _model_store=model_store(home)).tag.version)
    except bentoml.exceptions.NotFound:
        ranker = None
    return Version(folder.name, ranker)


def publish(settings: Settings, version: Version, share: int, serving: Version | None,
            progress: Callable[[str], None] = print) -> Release:
    """`version` to `share` percent of users beside `serving` (what served before its ranker entered the model
    store: `stable_version` taken then); 0, 100 or nothing serving yet: straight to stable."""
    release = read_release(settings.data_path) or (Release(serving) if serving is not None else None)
    if release is None:
        new = Release(version).logged("published", "first version")
    else:
        new = release.with_canary(version, share, "passed the gate")
    return _write(settings, release, new, progress)


def promote(settings: Settings, reason: str = "by command", progress: Callable[[str], None] = print) -> Release:
    release = _required(settings)
    return _write(settings, release, release.promoted(reason), progress)


def rollback(settings: Settings, reason: str = "by command", progress: Callable[[str], None] = print) -> Release:
    release = _required(settings)
    return _write(settings, release, release.rolled_back(reason), progress)


@dataclass(frozen=True)
class Figures:
    requests: int
    degraded_share: float  # answers below `full` (cold start aside)
    p99_ms: float  # of the computed answers
    computed: int  # answers computed for a user with history: not from layer 1 (a canary never is), not cold start


@dataclass(frozen=True)
class Verdict:
    stable: Figures
    canary: Figures
    breaches: list[str]
    enough: bool  # both versions answered `guardrail_min_requests` in the window

    @property
    def action(self) -> str:
        """rollback (a guardrail broke), promote (they hold), or hold (too few answers yet)."""
        return "hold" if not self.enough else "rollback" if self.breaches else "promote"


def figures(answers: pd.DataFrame) -> Figures:
    if answers.empty:
        return Figures(0, 0.0, 0.0, 0)
    degraded = ~answers["degradation"].isin(NOT_DEGRADED)
    computed = ~answers["cached"].fillna(False).astype(bool) & (answers["degradation"] != "cold_start")
    latency = answers.loc[computed, "latency_ms"]
    return Figures(len(answers), float(degraded.mean()), float(np.percentile(latency, 99)) if len(latency) else 0.0,
                   len(latency))


def judge(stable: Figures, canary: Figures, config: PipelineSettings, budget_ms: float | None = None) -> Verdict:
    """The canary's degraded share may exceed stable's by `guardrail_degraded_increase`; its p99 may be
    `guardrail_p99_ratio` times stable's, or, while stable has fewer than `guardrail_min_requests` computed answers
    to compare with (its users' lists come from layer 1), at most `budget_ms` (None: not judged then). Judged once
    each version has `guardrail_min_requests` answers."""
    enough = min(stable.requests, canary.requests) >= config.guardrail_min_requests
    breaches = []
    if canary.degraded_share > stable.degraded_share + config.guardrail_degraded_increase:
        breaches.append(f"degraded share {canary.degraded_share:.1%} against stable's {stable.degraded_share:.1%}")
    if stable.computed >= config.guardrail_min_requests:
        if canary.p99_ms > stable.p99_ms * config.guardrail_p99_ratio:
            breaches.append(f"p99 {canary.p99_ms:.1f} ms against stable's {stable.p99_ms:.1f} ms")
    elif budget_ms is not None and canary.p99_ms > budget_ms:
        breaches.append(f"p99 {canary.p99_ms:.1f} ms over the request budget of {budget_ms:.0f} ms (stable computed "
                        f"{stable.computed} answers, too few to compare with)")
    return Verdict(stable, canary, breaches, enough)


def guardrails(settings: Settings, release: Release, now: datetime | None = None) -> Verdict:
    """The canary against stable on the serving log of the recent window (since the canary got its share)."""
    if release.canary is None:
        raise InvalidInputError("no canary: nothing to compare")
    now = now or datetime.now(UTC)
    since = now - timedelta(minutes=settings.pipeline.guardrail_window_minutes)
    if release.canary_since:
        since = max(since, datetime.fromisoformat(release.canary_since))
    answers = serving_log.read(settings.lake_path, since=since,
                               columns=["candidates_version", "degradation", "cached", "latency_ms"])
    by_version = answers["candidates_version"]
    return judge(figures(answers[by_version == release.stable.candidates]),
                 figures(answers[by_version == release.canary.candidates]), settings.pipeline,
                 settings.serving.request_budget_ms)


def check(settings: Settings, now: datetime | None = None,
          progress: Callable[[str], None] = print) -> tuple[str, Verdict | None, Release | None]:
    """One guardrail check (`recsys release check`, for a CronJob or a loop): promote when the guardrails hold,
    roll back when one breaks, hold with too few answers. (action, verdict, the release after it); `none`
    without a canary."""
    release = read_release(settings.data_path)
    if release is None or release.canary is None:
        return "none", None, release
    verdict = guardrails(settings, release, now)
    if verdict.action == "rollback":
        release = rollback(settings, "guardrails: " + "; ".join(verdict.breaches), progress)
    elif verdict.action == "promote":
        release = promote(settings, "guardrails held", progress)
    return verdict.action, verdict, release


def _required(settings: Settings) -> Release:
    release = read_release(settings.data_path)
    if release is None:
        raise InvalidInputError(f"no release record in {settings.data_path / 'models'}: publish a version first "
                                "(recsys pipeline run)")
    return release


def _write(settings: Settings, before: Release | None, after: Release, progress: Callable[[str], None]) -> Release:
    if before is None or before.stable != after.stable:
        _make_stable(settings, after.stable, progress)
    write_release(settings.data_path, after)
    _track_states(settings, before, after, progress)
    return after


def release_states(release: Release | None) -> dict[Version, str]:
    """The state of each version in the release: `stable`, `canary N%`."""
    if release is None:
        return {}
    states = {release.stable: "stable"}
    if release.canary is not None:
        states[release.canary] = f"canary {release.share}%"
    return states


def _track_states(settings: Settings, before: Release | None, after: Release,
                  progress: Callable[[str], None]) -> None:
    """Each version whose state changed gets it as the `release` tag of its two-tower and ranker runs."""
    if not settings.tracking.enabled:
        return
    from training.tracking import annotate_version

    old, new = release_states(before), release_states(after)
    left = "rolled back" if after.history and after.history[-1]["action"] == "rolled back" else "retired"
    changed = {version: state for version, state in new.items() if old.get(version) != state}
    changed |= {version: left for version in old if version not in new}
    for version, state in changed.items():
        annotate_version(settings, "two-tower", version.candidates, tags={"release": state}, progress=progress)
        if version.ranker:
            annotate_version(settings, RANKER, version.ranker, tags={"release": state}, progress=progress)


def _make_stable(settings: Settings, version: Version, progress: Callable[[str], None]) -> None:
    """The version's user vectors into the online store (when its folder has them) and `models/CURRENT` at it."""
    from embeddings.artifacts import USER_VECTORS, publish_candidate_artifacts

    folder = settings.data_path / "models" / version.candidates
    if not (folder / "item_index").is_dir():
        raise InvalidInputError(f"version {version.candidates}: no candidate artifact at {folder}")
    if (folder / USER_VECTORS).is_file():
        publish_candidate_artifacts(settings, folder, progress)
        return
    current = folder.parent / "CURRENT"
    staged = current.with_name(f".CURRENT.{folder.name}")
    staged.write_text(folder.name)
    staged.replace(current)
