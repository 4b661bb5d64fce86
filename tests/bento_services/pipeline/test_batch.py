"""Batch recommendations through the serving pipeline: frames, files, the precompute job and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bento_services.pipeline import rankers
from bento_services.pipeline.batch import (
    COLUMNS,
    batch_settings,
    precompute,
    read_users,
    recommend_batch,
    write_recommendations,
)
from bento_services.pipeline.contracts import RecommendationRequest
from bento_services.pipeline.pipeline import build_pipeline
from cli.app import app
from recsys.backends import open_catalog
from recsys.errors import InvalidInputError
from recsys.stores.precomputed import KIND
from tests.bento_services.pipeline_data import World, build_world
from tests.conftest import make_settings


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(make_settings("local", tmp_path), tmp_path)


def test_a_batch_has_k_rows_per_known_user_and_matches_the_online_answer(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    users = [world.warm_user, world.cold_user, "unknown-user", world.warm_user]
    frame = recommend_batch(pipeline, users, k=7)
    assert tuple(frame.columns) == COLUMNS
    assert frame.groupby("user_id").size().to_dict() == {world.warm_user: 7, world.cold_user: 7, "unknown-user": 7}
    rungs = frame.groupby("user_id")["degradation"].agg(set).to_dict()
    assert rungs["unknown-user"] == rungs[world.cold_user] == {"cold_start"}  # new users: never an error
    online = pipeline.recommend(RecommendationRequest(world.warm_user, n=7), use_precomputed=False)
    assert frame[frame["user_id"] == world.warm_user]["item_id"].tolist() == [i.item_id for i in online.items]
    pipeline.close()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_files_round_trip(world: World, tmp_path: Path, suffix: str) -> None:
    pipeline = build_pipeline(world.settings)
    frame = recommend_batch(pipeline, [world.warm_user], k=5)
    pipeline.close()
    out = write_recommendations(frame, tmp_path / f"out{suffix}")
    back = pd.read_csv(out, dtype={"user_id": str, "item_id": str}) if suffix == ".csv" else pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    with pytest.raises(InvalidInputError, match=r"\.csv or \.parquet"):
        write_recommendations(frame, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_precompute_writes_layer_one(world: World) -> None:
    pipeline = build_pipeline(world.settings)
    moment = datetime.now(UTC)
    # a cold-start list is not stored: it is computed live, so that a profile update shows at once
    assert precompute(pipeline, [world.warm_user, world.cold_user], k=6, computed_at=moment) == 1
    with open_catalog(world.settings) as catalog:
        stored = catalog.get_recommendations(world.warm_user, KIND, moment)
        assert catalog.get_recommendations(world.cold_user, KIND, moment) == []
    assert [r.rank for r in stored] == [1, 2, 3, 4, 5, 6]
    assert pipeline.recommend(RecommendationRequest(world.warm_user, n=6)).cached
    pipeline.close()


def test_users_files(tmp_path: Path) -> None:
    (tmp_path / "u.txt").write_text("a\n\nb\n")
    pd.DataFrame({"user_id": ["x", "y"]}).to_csv(tmp_path / "u.csv", index=False)
    assert read_users(tmp_path / "u.txt") == ["a", "b"]
    assert read_users(tmp_path / "u.csv") == ["x", "y"]
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_users(tmp_path / "missing.txt")


def test_the_commands(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(world.settings.data_path))
    monkeypatch.setattr(rankers, "load_rankers", lambda settings, home=None: (None, {}))
    runner = CliRunner()
    out = tmp_path / "recs.parquet"
    result = runner.invoke(app, ["recommend-batch", "--all-active", "--k", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame["user_id"].nunique() == world.events["user_id"].nunique()
    assert frame.groupby("user_id").size().max() == 4
    both = runner.invoke(app, ["recommend-batch", "--all-active", "--users", str(tmp_path / "u.txt"),
                               "--out", str(out)])
    assert both.exit_code != 0
    result = runner.invoke(app, ["precompute", "--k", "5"])
    assert result.exit_code == 0, result.output
    with open_catalog(world.settings) as catalog:
        assert len(catalog.get_recommendations(world.warm_user, KIND, datetime.now(UTC))) == 5


def test_precompute_never_stores_a_fallback_as_a_computed_list(world: World, tmp_path: Path) -> None:
    pipeline = build_pipeline(world.settings, candidates_dir=tmp_path / "no-such-model")
    assert pipeline.recommend(RecommendationRequest(world.warm_user, n=6), use_precomputed=False).degradation.value \
        == "popular"
    assert precompute(pipeline, [world.warm_user], k=6) == 0
    with open_catalog(world.settings) as catalog:
        assert catalog.get_recommendations(world.warm_user, KIND, datetime.now(UTC)) == []
    pipeline.close()


def test_batch_settings_give_every_stage_a_generous_budget(world: World) -> None:
    relaxed = batch_settings(world.settings)
    assert all(ms >= 30_000 for ms in relaxed.serving.stage_timeout_ms.values())
    assert {"candidates", "features", "ranking", "user_state"} <= set(relaxed.serving.stage_timeout_ms)
    assert world.settings.serving.stage_timeout_ms["candidates"] < 30_000  # the online settings are untouched


def test_active_users_are_those_with_events_in_the_last_days_before_the_newest(world: World) -> None:
    from bento_services.pipeline.batch import active_users

    events = world.events
    newest = pd.Timestamp(events["event_time"].max())
    recent = events[pd.to_datetime(events["event_time"], utc=True) >= newest - pd.Timedelta(days=2)]
    assert active_users(world.settings, since_days=2) == sorted(map(str, recent["user_id"].unique()))
    assert set(active_users(world.settings, since_days=2)) < set(active_users(world.settings))


def test_active_users_capped_are_the_most_recently_active(world: World) -> None:
    from bento_services.pipeline.batch import active_users

    last = world.events.groupby(world.events["user_id"].astype(str))["event_time"].max().sort_values(ascending=False)
    cap = len(last) // 3
    chosen = active_users(world.settings, most=cap)
    assert len(chosen) == cap and chosen == sorted(chosen)
    assert min(last[chosen]) >= max(last.drop(chosen))  # nobody left out was active later than someone kept
