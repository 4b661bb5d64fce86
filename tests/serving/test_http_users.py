"""The user directory behind POST /interactions and /feedback: the catalog decides; an unreachable one lets
events in."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bento_services.api.directory import CatalogUsers
from recsys.backends import open_catalog
from recsys.errors import UnknownUserError
from recsys.settings import Settings
from tests.serving.conftest import closed_port


def test_catalog_users_know_registered_ids_only(tmp_path: Path) -> None:
    settings = Settings.load().model_copy(update={"data_dir": tmp_path, "profile": "local"})
    with open_catalog(settings) as catalog:
        catalog.migrate()
        catalog.write(users=pd.DataFrame({"user_id": ["u1"]}))
    users = CatalogUsers(settings)
    users.check("u1")
    users.check("u1")  # remembered
    with pytest.raises(UnknownUserError, match="'u2'"):
        users.check("u2")
    users.close()


def test_unreachable_catalog_lets_events_in(tmp_path: Path) -> None:
    base = Settings.load()
    settings = base.model_copy(update={"data_dir": tmp_path, "profile": "services",
                                       "postgres": base.postgres.model_copy(update={"port": closed_port()})})
    users = CatalogUsers(settings)
    users.check("anyone")  # never lose an event because the catalog is down
    users.close()
