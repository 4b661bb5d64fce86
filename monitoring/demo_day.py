"""The demo's last step: a simulated day of traffic through the real API, then every report.

The day is the one after the data ends (ml-latest-small ends in 2018): the API answers as at each visit's
moment (`as_of`, which the demo's server accepts: `serving.allow_as_of`), so the online features materialized
at the end of the data are fresh, as they would be the morning after a nightly run. Half of the users are in
the arm `holdout` of the experiment `demo`, served the same lists in random order (`shuffle`), the other half
in control; simulated users click by their genre taste (`monitoring.simulate.GenreAffinity`), so the
experiment report should find the ranking's lift. Both arms take the full path (`serving.precomputed_reads` off),
so they differ by the order alone. ml-latest-small's users are mostly years inactive by its end: they have no
recent user row, and the ranker sees typed defaults for those values. Then the nightly feature job takes the
day's events into the offline tables, and drift, quality, skew, the experiment and the index page are written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import pyarrow.compute as pc

from ingestion.features.engineering import FeatureJobConfig, run_feature_job
from monitoring.drift_events import model_data_end
from monitoring.run import Outcome, run_all
from monitoring.simulate import SimulationResult, simulate_day
from recsys.backends import open_lake
from recsys.settings import ExperimentVariant, Settings

EXPERIMENT = "demo"
HOLDOUT = ExperimentVariant(name="holdout", buckets=(0, 50), experiment=EXPERIMENT, shuffle=True)


@dataclass(frozen=True)
class DemoDay:
    settings: Settings  # what the day was served and reported with
    day: datetime
    simulation: SimulationResult
    outcome: Outcome


def day_settings(settings: Settings, sample_rate: float = 0.2) -> Settings:
    """`settings` with the demo's experiment, replays allowed, a larger feature sample (a small day), and every
    answer ranked live: control from layer 1 against a live holdout would compare paths, not orderings."""
    serving = settings.serving.model_copy(update={"allow_as_of": True, "experiments": [HOLDOUT],
                                                  "precomputed_reads": False})
    monitoring = settings.monitoring.model_copy(update={"feature_sample_rate": sample_rate})
    return settings.model_copy(update={"serving": serving, "monitoring": monitoring})


def day_after_data(settings: Settings) -> datetime:
    """Midnight UTC after the data the model in service was trained on (its index's `data_end`), else after the
    lake's newest event."""
    newest = model_data_end(settings)
    if newest is None:
        newest = pc.max(open_lake(settings).interactions(columns=["event_time"])["event_time"]).as_py()
    return (pd.Timestamp(newest).normalize() + pd.Timedelta(days=1)).to_pydatetime()


def run_demo_day(settings: Settings, users: int | None = None, visits_per_user: float = 1.5, seed: int = 0,
                 progress: Callable[[str], None] = lambda _: None) -> DemoDay:
    from bento_services.api.http import app_from_settings

    served = day_settings(settings)
    day = day_after_data(settings)
    chosen = _users(settings, users, seed)
    progress(f"a simulated day ({day:%Y-%m-%d}) of {len(chosen):,} users through the API; experiment "
             f"'{EXPERIMENT}': control (ranked) against {HOLDOUT.name} (shuffled), half of the users each")
    simulation = simulate_day(served, app_from_settings(served), chosen, visits_per_user=visits_per_user,
                              seed=seed, start=day)
    progress(f"{len(simulation.answers):,} answers, {simulation.events:,} events "
             f"({', '.join(f'{a} {n:,}' for a, n in simulation.actions.most_common())}), {simulation.failed} failed, "
             f"{simulation.logged:,} in the serving log")
    progress("the nightly feature job (Spark) over the lake, the day's events included: the offline tables the "
             "skew report recomputes from then cover the day, as the online ones do")
    run_feature_job(FeatureJobConfig(
        lake=settings.lake_path, output=settings.feature_data_path, master=settings.features.spark_master,
        cadence_days=settings.features.snapshot_cadence_days), progress=lambda line: progress(f"[spark] {line}"))
    outcome = run_all(served, since=day, until=day + timedelta(days=1), progress=progress)
    return DemoDay(served, day, simulation, outcome)


def _users(settings: Settings, count: int | None, seed: int) -> list[str]:
    users = pc.unique(open_lake(settings).interactions(columns=["user_id"])["user_id"]).to_pylist()
    users = sorted(str(u) for u in users)
    if count is None or count >= len(users):
        return users
    return [str(u) for u in pd.Series(users).sample(count, random_state=seed)]
