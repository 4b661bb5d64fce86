"""`recsys monitor drift`: planted shifts are reported where they were planted, resamples are not.

Small worlds built here: a ranker training set like `recsys training-set` writes, serving-log records whose
sampled `features` hold the ranker's input, lake events with a catalog, and two candidate model versions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from scipy.stats import ortho_group
from typer.testing import CliRunner

from bento_services.metrics import REGISTRY, register_drift_gauge
from cli.app import app
from monitoring.drift_embeddings import embedding_drift
from monitoring.drift_events import event_quality
from monitoring.drift_features import STATUS_PREFIX, align, feature_drift, served_features
from monitoring.drift_predictions import prediction_drift
from monitoring.reports import report_dir
from recsys import serving_log
from recsys.backends import open_catalog, open_lake
from recsys.models.item_index import ItemIndex
from recsys.settings import Settings

T0 = datetime(2026, 3, 2, tzinfo=UTC)
SHIFTED = "item_features__avg_rating"
CANDIDATES = 40  # ranked candidates per logged request


def draw_features(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """Ranker inputs named as the feature service names them; `shift` moves one feature's mean."""
    return pd.DataFrame({
        "user_features__interactions_total": rng.lognormal(3.0, 1.0, n).round(),
        "user_features__avg_rating_given": rng.normal(3.5, 0.5, n),
        "user_features__engagement_level": rng.choice(["low", "medium", "high"], n, p=[0.5, 0.3, 0.2]),
        "item_features__category": rng.choice(["Drama", "Comedy", "Action", "Thriller", "Horror"], n),
        SHIFTED: rng.normal(3.4, 0.6, n) + shift,
        "item_features__click_rate": rng.beta(2.0, 20.0, n),
        "request_features__hour_of_day": rng.integers(0, 24, n),
        "request_features__is_weekend": (rng.random(n) < 2 / 7).astype("int64"),
        "user_item_features__user_category_affinity": rng.uniform(0.0, 1.0, n),
    })


def write_training_set(path: Path, features: pd.DataFrame) -> Path:
    """The file `recsys training-set` writes: labelled events, features, a status column per feature."""
    n = len(features)
    frame = pd.DataFrame({"user_id": [f"u{k % 300}" for k in range(n)], "item_id": [f"i{k % 500}" for k in range(n)],
                          "event_timestamp": pd.Timestamp(T0) - pd.to_timedelta(np.arange(n), unit="min"),
                          "label": np.arange(n) % 2})
    frame = pd.concat([frame, features], axis=1)
    for column in features.columns:
        frame[f"{STATUS_PREFIX}{column}"] = "present"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def answer(k: int, at: datetime, scores: list[float], sources: list[str], degradation: str = "full",
           features: pd.DataFrame | None = None) -> dict[str, Any]:
    """One serving-log record as the API writes it."""
    items = [f"i{(k * 7 + j) % 500}" for j in range(len(scores))]
    logged = None
    if features is not None:
        logged = serving_log.features_json({"user_id": [f"u{k}"] * len(features), "item_id": items[:len(features)],
                                            **{c: features[c].tolist() for c in features.columns}})
    return {"request_id": f"r{at:%H%M%S}-{k}", "served_at": int(at.timestamp() * 1000), "user_id": f"u{k}",
            "variant": "control", "bucket": k % 100, "model_version": "ranker-1", "candidates_version": "tt-1",
            "degradation": degradation, "cached": False, "latency_ms": 20.0, "stage_ms": {"ranking": 5.0},
            "item_ids": items, "scores": scores, "sources": sources, "explanations": ["similar_users"] * len(scores),
            "features": logged}


def sampled_log(features: pd.DataFrame, start: datetime) -> pd.DataFrame:
    """The served sample: the rows split into requests of CANDIDATES ranked candidates, a minute apart."""
    records = [answer(k, start + timedelta(minutes=k), [1.0] * 10, ["collaborative"] * 10,
                      features=features.iloc[s:s + CANDIDATES].reset_index(drop=True))
               for k, s in enumerate(range(0, len(features), CANDIDATES))]
    return serving_log.to_table(records).to_pandas()


def settings_in(tmp_path: Path, **monitoring: Any) -> Settings:
    base = Settings.load()
    return base.model_copy(update={"data_dir": tmp_path / "data",
                                   "monitoring": base.monitoring.model_copy(update=monitoring)})


# -- feature drift --------------------------------------------------------------------------------------------


def test_a_shift_planted_in_one_feature_is_reported_for_that_feature(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    rng = np.random.default_rng(1)
    reference = write_training_set(tmp_path / "ranker_v2.parquet", draw_features(rng, 4000))
    log = sampled_log(draw_features(rng, 3000, shift=0.6), T0)  # one standard deviation

    part = feature_drift(settings, log, report_dir(settings), reference)

    assert part.drifted == [SHIFTED], [(c.column, c.method, round(c.score, 3)) for c in part.columns]
    assert len(part.columns) == 7  # every feature compared (the names line up) but the request's clock (2)
    assert part.metrics["drift_share"] == pytest.approx(1 / 7)
    assert part.ok  # one of seven is under the default share threshold
    for name in part.files:
        assert (report_dir(settings) / name).stat().st_size > 1000, name
    assert {"drift_features.html", "drift_features.json"} == set(part.files)


def test_a_resample_of_the_training_set_is_not_drift(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    features = draw_features(np.random.default_rng(2), 4000)
    reference = write_training_set(tmp_path / "ranker_v2.parquet", features)
    resample = features.sample(3000, replace=True, random_state=3).reset_index(drop=True)

    part = feature_drift(settings, sampled_log(resample, T0), report_dir(settings), reference)

    assert part.drifted == [] and part.metrics["drift_share"] == 0.0 and part.ok
    assert len(part.columns) == 7


def test_log_columns_line_up_with_the_training_set_and_the_rest_is_listed(tmp_path: Path) -> None:
    features = draw_features(np.random.default_rng(4), 400)
    log = sampled_log(features, T0)
    served = served_features(log, rows=10_000)
    assert len(served) == 400 and "user_id" not in served and "item_id" not in served
    # Feast's short names (`view:feature`) read as the full ones; a column of one side only is listed.
    short = served.rename(columns={SHIFTED: SHIFTED.replace("__", ":")}).assign(extra_score=1.0)
    renamed = served_features(pd.DataFrame({"features": [serving_log.features_json(short.to_dict("list"))]}), 10_000)
    reference, current, only_reference, only_served = align(features.drop(columns=["item_features__click_rate"]),
                                                            renamed)
    assert SHIFTED in current and list(reference.columns) == list(current.columns)
    assert only_reference == [] and set(only_served) == {"item_features__click_rate", "extra_score"}
    assert current["request_features__hour_of_day"].dtype.kind in "if"
    assert current["item_features__category"].dtype == object


# -- the command --------------------------------------------------------------------------------------------------


def run_command(tmp_path: Path, current: pd.DataFrame, features: pd.DataFrame) -> tuple[int, str, Path]:
    config = tmp_path / "recsys.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n\n[monitoring]\ndrift_share_threshold = 0.05\n')
    settings = Settings.load(config_file=config)
    write_training_set(settings.data_path / "training" / "ranker_v2.parquet", features)
    serving_log.write(settings.lake_path, [json.loads(json.dumps(r)) for r in _records(current)])
    result = CliRunner().invoke(app, ["--config", str(config), "monitor", "drift"])
    return result.exit_code, result.output, report_dir(settings)


def _records(features: pd.DataFrame) -> list[dict[str, Any]]:
    return [answer(k, T0 + timedelta(minutes=k), [1.0] * 10, ["collaborative"] * 10,
                   features=features.iloc[s:s + CANDIDATES].reset_index(drop=True))
            for k, s in enumerate(range(0, len(features), CANDIDATES))]


def test_the_command_exits_1_over_the_threshold_and_the_gauge_shows_the_share(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    code, output, folder = run_command(tmp_path, draw_features(rng, 2000, shift=0.6), draw_features(rng, 3000))

    assert code == 1, output
    assert SHIFTED in output and str(folder) in output
    verdict = json.loads((folder / "verdicts" / "drift.json").read_text())
    assert verdict["kind"] == "drift" and not verdict["ok"]
    assert verdict["metrics"]["drift_share"] == pytest.approx(1 / 7)
    assert verdict["metrics"]["features_ok"] == 0.0
    assert {"drift_features.html", "drift_features.json"} <= set(verdict["files"])
    # Nothing else to compare in this world: each part says why.
    assert "predictions: not compared" in output and "embeddings: not compared" in output

    register_drift_gauge(Settings.load(config_file=tmp_path / "recsys.toml"))
    scraped = generate_latest(REGISTRY).decode()
    assert 'recsys_drift_share{report="features"} 0.142' in scraped
    assert 'recsys_drift_ok{report="all"} 0.0' in scraped and 'recsys_drift_ok{report="features"} 0.0' in scraped


def test_the_command_exits_0_within_the_threshold(tmp_path: Path) -> None:
    features = draw_features(np.random.default_rng(6), 3000)
    code, output, folder = run_command(tmp_path, features.sample(2000, random_state=7).reset_index(drop=True),
                                       features)

    assert code == 0, output
    verdict = json.loads((folder / "verdicts" / "drift.json").read_text())
    assert verdict["ok"] and verdict["metrics"]["drift_share"] == 0.0
    register_drift_gauge(Settings.load(config_file=tmp_path / "recsys.toml"))
    assert 'recsys_drift_share{report="features"} 0.0' in generate_latest(REGISTRY).decode()


# -- prediction drift ------------------------------------------------------------------------------------------


def scored_log(rng: np.random.Generator, start: datetime, requests: int, shift: float = 0.0,
               default_share: float = 0.0) -> list[dict[str, Any]]:
    """Requests of 10 items: ranker scores, sources, and a share answered on default features."""
    return [answer(k, start + timedelta(seconds=60 * k), list(rng.normal(shift, 1.0, 10)),
                   list(rng.choice(["collaborative", "content", "popularity"], 10, p=[0.6, 0.3, 0.1])),
                   "default_features" if rng.random() < default_share else "full")
            for k in range(requests)]


def test_shifted_ranker_scores_are_prediction_drift_and_nothing_else(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    rng = np.random.default_rng(8)
    day = T0 + timedelta(days=1)
    log = serving_log.to_table(scored_log(rng, T0, 300) + scored_log(rng, day, 300, shift=0.5)).to_pandas()

    part = prediction_drift(settings, log, day, report_dir(settings))

    assert part.drifted == ["score"] and not part.ok
    assert "requests before" in part.line
    assert part.metrics["score_mean"] - part.metrics["score_mean_reference"] == pytest.approx(0.5, abs=0.1)


def test_more_degraded_answers_are_prediction_drift(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    rng = np.random.default_rng(9)
    day = T0 + timedelta(days=1)
    log = serving_log.to_table(scored_log(rng, T0, 300) + scored_log(rng, day, 300, default_share=0.4)).to_pandas()

    assert prediction_drift(settings, log, day, report_dir(settings)).drifted == ["degradation"]


def test_without_an_earlier_day_the_first_half_is_the_reference(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    log = serving_log.to_table(scored_log(np.random.default_rng(10), T0, 600)).to_pandas()

    part = prediction_drift(settings, log, T0, report_dir(settings))

    assert part.ok and part.drifted == [] and "first half" in part.line
    assert [c.column for c in part.columns] == ["score", "source", "degradation"]


# -- incoming events -----------------------------------------------------------------------------------------------


def events(rng: np.random.Generator, start: datetime, n: int, actions: dict[str, float],
           unknown_items: float = 0.0) -> pd.DataFrame:
    action = rng.choice(list(actions), n, p=list(actions.values()))
    items = np.where(rng.random(n) < unknown_items, "ghost", np.char.add("i", rng.integers(0, 50, n).astype(str)))
    return pd.DataFrame({
        "event_id": [f"e{start:%j}-{k}" for k in range(n)],
        "user_id": np.char.add("u", rng.integers(0, 40, n).astype(str)),
        "item_id": items, "event_time": [start + timedelta(seconds=30 * k) for k in range(n)], "action_type": action,
        "value": np.where(action == "rate", rng.integers(1, 6, n).astype(float), np.nan), "session_id": "s",
        "context": None,
    })


def lake_with_events(settings: Settings, incoming: pd.DataFrame, history: pd.DataFrame) -> None:
    with open_catalog(settings) as catalog:
        catalog.migrate()
        catalog.write(items=pd.DataFrame({"item_id": [f"i{k}" for k in range(50)], "title": "t", "category": "Drama",
                                          "created_at": T0 - timedelta(days=30)}))
        catalog.register_users({f"u{k}": T0 - timedelta(days=30) for k in range(40)})
    open_lake(settings).write_interactions(pd.concat([history, incoming], ignore_index=True))


def test_incoming_clicks_on_unknown_items_fail_event_quality(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    rng = np.random.default_rng(11)
    history = events(rng, T0 - timedelta(days=1), 1000, {"rate": 0.8, "tag": 0.2})
    incoming = events(rng, T0 + timedelta(hours=1), 1000, {"click": 0.6, "view": 0.3, "rate": 0.1},
                      unknown_items=0.1)
    lake_with_events(settings, incoming, history)

    part = event_quality(settings, report_dir(settings), since=T0)

    assert not part.ok and part.drifted == ["action_type"]
    assert part.metrics["unknown_item_share"] == pytest.approx(0.1, abs=0.03)
    assert part.metrics["unknown_user_share"] == 0.0 and part.metrics["missing_share"] == 0.0
    assert "action mix drifted" in part.line and "unknown users 0.0%, items" in part.line
    assert {"data_quality_events.html", "data_quality_events.json"} == set(part.files)


def test_incoming_events_like_the_history_pass_event_quality(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    rng = np.random.default_rng(12)
    mix = {"rate": 0.8, "tag": 0.2}
    lake_with_events(settings, events(rng, T0 + timedelta(hours=1), 800, mix), events(rng, T0 - timedelta(days=1),
                                                                                      1000, mix))

    part = event_quality(settings, report_dir(settings), since=T0)

    assert part.ok and part.drifted == [], part.line
    assert part.metrics["incoming_events"] == 800
    later = event_quality(settings, report_dir(settings), since=T0 + timedelta(days=2))
    assert later.skipped and later.ok and "0 events after" in later.line and later.files == []


# -- embeddings --------------------------------------------------------------------------------------------------


def save_version(settings: Settings, version: str, vectors: np.ndarray, created: datetime) -> None:
    folder = settings.data_path / "models" / version / "item_index"
    ItemIndex.build(vectors.astype(np.float32), [f"i{k}" for k in range(len(vectors))], model_version=version,
                    data_start=T0 - timedelta(days=30), data_end=T0, version=version).save(folder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "created_at": created.isoformat()}))


@pytest.mark.parametrize("moved", [0.0, 0.5])
def test_embedding_drift_sees_moved_items_through_a_rotation(tmp_path: Path, moved: float) -> None:
    settings = settings_in(tmp_path, embedding_sample_items=200, drift_min_rows=100)
    rng = np.random.default_rng(13)
    centres = rng.normal(scale=2.0, size=(5, 16))  # items in taste clusters: a rotation moves them visibly
    old = centres[rng.integers(0, 5, 200)] + rng.normal(scale=0.5, size=(200, 16))
    # A retraining: the same geometry in another basis, a little noise, and `moved` of the items elsewhere.
    new = old @ ortho_group.rvs(16, random_state=14) + rng.normal(scale=0.05, size=old.shape)
    count = int(moved * len(new))
    new[:count] = rng.normal(loc=1.5, size=(count, 16))
    save_version(settings, "tt-old", old, T0)
    save_version(settings, "tt-new", new, T0 + timedelta(days=1))

    part = embedding_drift(settings, report_dir(settings))

    assert part.ok == (moved == 0.0), part.line
    assert "from tt-old to tt-new" in part.line
    assert part.metrics["embedding_drifted"] == float(moved > 0)
    assert (part.metrics["embedding_drift_score"] > 0.015) == (moved > 0)  # MMD, Evidently's default threshold
    assert (part.metrics["embedding_neighbour_overlap"] > 0.7) == (moved == 0)
    assert {"drift_embeddings.html", "drift_embeddings.json"} == set(part.files)
    snapshot = json.loads((report_dir(settings) / "drift_embeddings.json").read_text())
    assert snapshot["metrics"][0]["value"] == pytest.approx(part.metrics["embedding_drift_score"])
