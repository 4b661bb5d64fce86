"""The settings object: profiles, environment overrides, and unknown keys as errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.errors import ConfigError
from recsys.settings import Settings


def test_defaults_are_the_local_profile_on_loopback() -> None:
    settings = Settings.load()
    assert settings.profile == "local"
    assert settings.postgres.host == "127.0.0.1" and settings.cassandra.hosts == ["127.0.0.1"]


def test_environment_overrides_nested_keys_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "recsys.toml"
    config.write_text('profile = "services"\n[postgres]\nport = 6000\nhost = "db.internal"\n')
    monkeypatch.setenv("RECSYS_POSTGRES__PORT", "7000")
    monkeypatch.setenv("RECSYS_CASSANDRA__HOSTS", '["10.0.0.1", "10.0.0.2"]')
    settings = Settings.load(config_file=config)
    assert settings.profile == "services"
    assert (settings.postgres.host, settings.postgres.port) == ("db.internal", 7000)
    assert settings.cassandra.hosts == ["10.0.0.1", "10.0.0.2"]


def test_paths_follow_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    settings = Settings.load()
    assert settings.lake_path == tmp_path / "lake"
    assert settings.movielens_path == tmp_path / "ml-latest-small"


@pytest.mark.parametrize("name", ["RECSYS_POSTGRES__PROT", "RECSYS_PROFILES", "RECSYS_PROFILE__NAME"])
def test_unknown_environment_keys_are_errors(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=name):
        Settings.load()


def test_unknown_file_keys_and_bad_values_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "recsys.toml"
    config.write_text("[redis]\nprt = 1\n")
    with pytest.raises(ConfigError, match="redis.prt"):
        Settings.load(config_file=config)
    monkeypatch.setenv("RECSYS_PROFILE", "production")
    with pytest.raises(ConfigError, match="profile"):
        Settings.load()


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_POSTGRES__PASSWORD", "hunter2")
    settings = Settings.load()
    assert "hunter2" not in repr(settings)
    assert "password=hunter2" in settings.postgres.conninfo()


def test_an_unknown_profile_from_a_flag_is_an_error_naming_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"profile: Input should be 'local' or 'services'"):
        Settings.load(profile="servics")


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_PROFILE", "services")
    assert Settings.load(profile="local").profile == "local"


@pytest.mark.parametrize(("update", "says"), [
    ({"rank_depth": 0}, r"rank_depth: Input should be greater than or equal to 1"),
    ({"rank_dept": 3}, r"unknown setting\(s\) rank_dept in ServingSettings; allowed: host, port"),
    ({"workers": "two"}, r"workers: Input should be a valid integer"),
])
def test_section_copies_are_validated(update: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.load().serving.model_copy(update=update)


def test_settings_copies_are_validated_and_do_not_reread_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.load()
    with pytest.raises(ConfigError, match=r"serving.rank_depth: Input should be greater than or equal to 1"):
        settings.model_copy(update={"serving": {"rank_depth": 0}})
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) nope in Settings"):
        settings.model_copy(update={"nope": 1})
    monkeypatch.setenv("RECSYS_POSTGRES__PORT", "1")
    copied = settings.model_copy(update={"data_dir": "/tmp/elsewhere", "serving": {"rank_depth": 3}})
    assert copied.data_dir == Path("/tmp/elsewhere") and copied.serving.rank_depth == 3
    assert copied.postgres.port == settings.postgres.port  # a copy, not a new load
