"""A day of monitoring end to end, as `make demo` ends: simulated users with known tastes go through the real
API (an experiment: the ranked order against a shuffled holdout), then every report and the index page, each
opened in headless Chromium (screenshots kept under var/test-artifacts/screenshots/monitoring-day/)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from bento_services.api.http import create_app
from bento_services.pipeline.pipeline import build_pipeline
from bento_services.serving_log import open_serving_log
from ingestion.features.realtime_table import write_realtime_table
from monitoring.run import run_all
from monitoring.simulate import simulate_day
from recsys import serving_log
from recsys.backends import open_bus, open_lake
from recsys.settings import ExperimentVariant, Settings
from tests.bento_services.conftest import api_settings
from tests.bento_services.pipeline_data import FakeRanker, build_world, with_features
from tests.conftest import make_settings
from tests.monitoring.screenshots import ARTIFACTS, screenshot_reports

HOLDOUT = ExperimentVariant(name="holdout", buckets=(0, 50), experiment="day", shuffle=True)


def day_settings(settings: Settings) -> Settings:
    settings = api_settings(settings, experiments=[HOLDOUT], precomputed_reads=False, allow_as_of=True,
                            rate_limit_per_second=10_000.0, rate_limit_burst=10_000)
    return settings.model_copy(update={"monitoring": settings.monitoring.model_copy(update={
        "feature_sample_rate": 0.5, "log_flush_seconds": 0.2, "drift_min_rows": 50, "quality_min_lists": 10})})


def test_a_simulated_day_gives_every_report_and_each_opens(tmp_path: Path) -> None:
    # Yesterday, visits spread over its 24 hours (`as_of`), on features materialized the day before: a day
    # compressed into seconds would stamp a visit's events after the user's next visit.
    day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    world = build_world(make_settings("local", tmp_path), tmp_path, users=120, items=150, interactions=6_000)
    settings = day_settings(with_features(world, tmp_path, day=day - timedelta(hours=6)))
    pipeline = build_pipeline(settings, ranker=FakeRanker())
    app = create_app(settings, pipeline, open_bus(settings), serving_log=open_serving_log(settings),
                     close_on_shutdown=True)
    users = sorted(world.events["user_id"].astype(str).unique())
    result = simulate_day(settings, app, users, visits_per_user=2.0, ground_truth=tmp_path / "synthetic",
                          start=day, show_progress=False)
    assert result.failed == 0 and result.logged == len(result.answers) > len(users)
    log = serving_log.read(settings.lake_path)
    assert not log["cached"].any() and set(log["variant"]) == {"control", "holdout"}
    assert log["features"].notna().any()  # the ranker's input of the sampled requests

    # The nightly job's part skew reads: the real-time view's offline table over the lake, the day included.
    write_realtime_table(open_lake(settings), settings.feature_data_path)
    outcome = run_all(settings, since=day, until=day + timedelta(days=1))
    kinds = {v.kind: v for v in outcome.verdicts}
    assert set(kinds) == {"drift", "quality", "skew", "experiment_day"}
    crashed = [v.line for v in outcome.verdicts if v.line.startswith("the report failed")]
    assert not crashed, crashed
    assert kinds["skew"].ok, kinds["skew"].line  # the online store and Feast agree: nothing planted
    assert "ratio check ok" in kinds["experiment_day"].line  # the 50/50 assignment holds
    # Every report the day wrote opens in a browser, with no broken page, and the index links each verdict.
    pages = screenshot_reports(settings.reports_path, ARTIFACTS / "screenshots" / "monitoring-day")
    names = {Path(p.png).stem for p in pages}
    assert {"index", "quality_online", "skew", "experiment_day"} <= names
    index = (settings.reports_path / "index.html").read_text()
    assert all(kind in index for kind in kinds)
    assert pd.Timestamp(day) <= pd.Timestamp(log["served_at"].min()) < pd.Timestamp(log["served_at"].max()) < \
        pd.Timestamp(day + timedelta(days=1))
