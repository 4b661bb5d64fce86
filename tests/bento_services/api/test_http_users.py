"""The user directory behind POST /interactions and /feedback: the catalog decides; an unreachable one lets
events in."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bento_services.api import directory
from bento_services.api.directory import CatalogUsers
from recsys.backends import open_catalog
from recsys.errors import UnknownUserError
from recsys.settings import Settings
from recsys.stores import CatalogStore
from tests.bento_services.conftest import closed_port


def test_catalog_users_know_registered_ids_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.load().model_copy(update={"data_dir": tmp_path, "profile": "local"})
    with open_catalog(settings) as catalog:
        catalog.migrate()
        catalog.write(users=pd.DataFrame({"user_id": ["u1"]}))
    reads: list[str] = []

    def counting(settings: Settings) -> CatalogStore:
        store = open_catalog(settings)
        read = store.get_user
        store.get_user = lambda user_id: (reads.append(user_id), read(user_id))[1]  # type: ignore[method-assign]
        return store

    monkeypatch.setattr(directory, "open_catalog", counting)
    users = CatalogUsers(settings)
    users.check("u1")
    users.check("u1")
    assert reads == ["u1"], "a known id costs one catalog read"
    for _ in range(2):
        with pytest.raises(UnknownUserError, match="'u2'"):
            users.check("u2")
    assert reads == ["u1", "u2", "u2"], "an unknown id is asked again (it may register)"
    users.close()


def test_unreachable_catalog_lets_events_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = Settings.load()
    settings = base.model_copy(update={"data_dir": tmp_path, "profile": "services",
                                       "postgres": base.postgres.model_copy(update={"port": closed_port()})})
    attempts: list[Settings] = []

    def unreachable(settings: Settings) -> CatalogStore:
        attempts.append(settings)
        return open_catalog(settings)

    monkeypatch.setattr(directory, "open_catalog", unreachable)
    users = CatalogUsers(settings)
    assert users.check("anyone") is None  # accepted: never lose an event because the catalog is down
    assert users.check("anyone") is None
    assert len(attempts) == 1, "a down catalog is retried after a back-off, not on every event"
    users.close()
