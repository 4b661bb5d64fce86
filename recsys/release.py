"""The release record, `data_dir/models/RELEASE.json`: which version every serving process serves.

A version is a candidate artifact (`models/<candidates>`) and a ranker version in the BentoML model store (None:
answers in candidate order). The record names the stable version and, during a canary, a second version with the
share of users (0-100, by a stable bucket of the user id) that get it. Serving processes poll the file and keep
both versions loaded; `recsys release promote|rollback|check` and the daily pipeline change it. Without the file,
serving follows `models/CURRENT` and `ranker:latest`, as before releases existed.

Transitions are pure (`Release.with_canary`, `promoted`, `rolled_back`); `write_release` replaces the file
atomically (a temp file, then `os.replace`), so a reader sees the old record or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.errors import InvalidInputError

RELEASE_FILE = "RELEASE.json"
STEPS = (5, 50, 100)  # the canary's shares on the way to stable; reaching 100 makes it stable
HISTORY_KEPT = 20  # events shown by `recsys release status`
PREVIOUS_KEPT = 5  # former stable versions a rollback can return to


@dataclass(frozen=True)
class Version:
    candidates: str  # models/<candidates>
    ranker: str | None = None  # the ranker's version in the model store; None: candidate order

    def __str__(self) -> str:
        return f"{self.candidates} + ranker {self.ranker or 'none'}"


@dataclass(frozen=True)
class Release:
    stable: Version
    canary: Version | None = None
    share: int = 0  # percent of users (by release bucket) on the canary
    canary_since: str | None = None  # when the canary got its current share (ISO time): guardrails look after it
    previous: tuple[Version, ...] = ()  # former stable versions, newest last: where a rollback returns to
    history: tuple[dict[str, Any], ...] = field(default=())  # {at, action, stable, canary, share, reason}

    def with_canary(self, version: Version, share: int, reason: str = "") -> Release:
        """`version` to `share` percent of users; 0 or 100: straight to stable (the previous stable kept for a
        rollback)."""
        if not 0 <= share <= 100:
            raise InvalidInputError(f"a canary share is 0..100, not {share}")
        if share in (0, 100):
            return self._stable(version, "published", reason)
        return replace(self, canary=version, share=share, canary_since=_now()).logged("canary", reason)

    def promoted(self, reason: str = "") -> Release:
        """The canary's next share in `STEPS` (5 -> 50 -> 100); at 100 it becomes stable."""
        if self.canary is None:
            raise InvalidInputError("no canary to promote")
        share = next((s for s in STEPS if s > self.share), 100)
        if share >= 100:
            return self._stable(self.canary, "promoted", reason)
        return replace(self, share=share, canary_since=_now()).logged("promoted", reason)

    def rolled_back(self, reason: str = "") -> Release:
        """Without the canary; with no canary, stable returns to the previous stable version."""
        if self.canary is not None:
            return replace(self, canary=None, share=0, canary_since=None).logged("rolled back", reason)
        if not self.previous:
            raise InvalidInputError("no canary and no previous stable version to roll back to")
        back = replace(self, stable=self.previous[-1], previous=self.previous[:-1])
        return back.logged("rolled back", reason)

    def _stable(self, version: Version, action: str, reason: str) -> Release:
        previous = self.previous if version == self.stable else (*self.previous, self.stable)[-PREVIOUS_KEPT:]
        return replace(self, stable=version, canary=None, share=0, canary_since=None,
                       previous=previous).logged(action, reason)

    def logged(self, action: str, reason: str) -> Release:
        """This release with an event added to its history."""
        event = {"at": _now(), "action": action, "stable": str(self.stable),
                 "canary": str(self.canary) if self.canary else None, "share": self.share, "reason": reason}
        return replace(self, history=(*self.history, event)[-HISTORY_KEPT:])

    def as_dict(self) -> dict[str, Any]:
        return {"stable": _plain(self.stable), "canary": _plain(self.canary), "share": self.share,
                "canary_since": self.canary_since, "previous": [_plain(v) for v in self.previous],
                "history": list(self.history)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        return cls(Version(**data["stable"]), Version(**data["canary"]) if data.get("canary") else None,
                   int(data.get("share") or 0), data.get("canary_since"),
                   tuple(Version(**v) for v in data.get("previous") or ()), tuple(data.get("history") or ()))


def release_path(data_path: Path) -> Path:
    return Path(data_path) / "models" / RELEASE_FILE


def read_release(data_path: Path) -> Release | None:
    """The record, or None when no release was ever written (serving follows `models/CURRENT`)."""
    path = release_path(data_path)
    try:
        return Release.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def write_release(data_path: Path, release: Release) -> None:
    """Replace the record atomically."""
    path = release_path(data_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{RELEASE_FILE}.{os.getpid()}")
    staged.write_text(json.dumps(release.as_dict(), indent=2) + "\n")
    os.replace(staged, path)


def _plain(version: Version | None) -> dict[str, Any] | None:
    return None if version is None else {"candidates": version.candidates, "ranker": version.ranker}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
