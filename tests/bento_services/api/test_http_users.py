"""The user directory behind POST /users: profiles go to the catalog at once, nothing is remembered between
calls, and an unreachable catalog is a 503 the client can retry (events are never refused for a user)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bento_services.api import directory
from bento_services.api.directory import CatalogUnavailableError, CatalogUsers
from recsys.backends import open_catalog
from recsys.settings import Settings
from recsys.stores import CatalogStore
from tests.bento_services.conftest import closed_port


def test_catalog_users_write_through_and_remember_nothing(tmp_path: Path) -> None:
    settings = Settings.load().model_copy(update={"data_dir": tmp_path, "profile": "local"})
    with open_catalog(settings) as catalog:
        catalog.migrate()
        catalog.write(users=pd.DataFrame({"user_id": ["u1"], "language": ["fr"]}))
    users = CatalogUsers(settings)
    row, created = users.upsert("u1", ["Drama"], None, "FR")
    assert created is False
    assert (row["preferred_categories"], row["language"], row["country"]) == (["Drama"], "fr", "FR")
    row, created = users.upsert("u2", None, "en", None)
    assert created is True and row["user_id"] == "u2" and row["preferred_categories"] is None
    with open_catalog(settings) as catalog:  # another writer (an import) changes the profile meanwhile
        catalog.write(users=pd.DataFrame({"user_id": ["u2"], "language": ["de"]}))
    row, created = users.upsert("u2", ["Comedy"], None, None)
    assert created is False and row["language"] == "de", "the stored row, never a remembered one"
    users.close()


def test_an_unreachable_catalog_is_catalog_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = Settings.load()
    settings = base.model_copy(update={"data_dir": tmp_path, "profile": "services",
                                       "postgres": base.postgres.model_copy(update={"port": closed_port()})})
    attempts: list[Settings] = []

    def unreachable(settings: Settings) -> CatalogStore:
        attempts.append(settings)
        return open_catalog(settings)

    monkeypatch.setattr(directory, "open_catalog", unreachable)
    users = CatalogUsers(settings)
    for _ in range(2):
        with pytest.raises(CatalogUnavailableError, match="'anyone' was not written") as raised:
            users.upsert("anyone", ["Drama"], None, None)
        assert raised.value.http_status == 503 and raised.value.retry_after_seconds >= 1
    assert len(attempts) == 1, "a down catalog is retried after a back-off, not on every call"
    users.close()
