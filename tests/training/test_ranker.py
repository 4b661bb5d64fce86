"""The ranker on a tiny dataset whose answer is known: a planted signal, one encoder for training and
serving, missing features, and the round trip through a temporary BentoML model store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bento_services.pipeline.contracts import Ranker
from recsys.models.ranker import Column, FeatureEncoder, WideDeepRanker, load_ranker
from training.ranker_eval import list_metrics
from training.ranker_train import RankerTrainConfig, TrainedRanker, save_ranker, train_ranker

COLUMNS = [
    Column("item_features__category", "categorical", "unknown"),
    Column("user_features__engagement_level", "categorical", "low"),
    Column("item_features__interactions_30d", "numeric", 0.0),
    Column("user_item_features__user_category_affinity", "numeric", 0.0),
    Column("request_features__hour_of_day", "numeric", 12.0),
]
FAST = RankerTrainConfig(epochs=5, batch_size=512, learning_rate=5e-3, patience=2, members=2)


def planted(lists: int = 160, depth: int = 20, seed: int = 0) -> pd.DataFrame:
    """Users take items of category "a" they have affinity for; candidate scores are pure noise."""
    rng = np.random.default_rng(seed)
    n = lists * depth
    frame = pd.DataFrame({
        "list_id": np.repeat(np.arange(lists), depth),
        "user_id": np.repeat([f"u{i}" for i in range(lists)], depth),
        "item_id": [f"i{j}" for j in rng.integers(0, 500, n)],
        "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
        "candidate_score": rng.random(n), "embedding_score": rng.normal(size=n),
        "item_features__category": rng.choice(["a", "b", "c"], n),
        "user_features__engagement_level": rng.choice(["low", "high"], n),
        "item_features__interactions_30d": rng.poisson(5, n).astype(float),
        "user_item_features__user_category_affinity": rng.random(n),
        "request_features__hour_of_day": rng.integers(0, 24, n).astype(float),
    })
    signal = (frame["item_features__category"] == "a") & (frame["user_item_features__user_category_affinity"] > 0.5)
    frame["label"] = (signal & (rng.random(n) < 0.9)).astype("int64")
    return frame


def serving_layout(frame: pd.DataFrame) -> dict[str, list[object]]:
    """One list as `FastOnlineFeatures.get(...)[0]` gives it: plain Python values per column."""
    return {c: frame[c].tolist() for c in ["user_id", "item_id", *(col.ref for col in COLUMNS)]}


@pytest.fixture(scope="module")
def trained() -> TrainedRanker:
    return train_ranker(planted(), COLUMNS, FAST, progress=lambda _: None, version="test")


def test_learns_the_planted_signal(trained: TrainedRanker) -> None:
    test = planted(seed=1)
    scores = trained.ranker.score_lists(test, test["candidate_score"].to_numpy(), test["embedding_score"].to_numpy(),
                                        test["list_id"].to_numpy())
    assert roc_auc_score(test["label"], scores) > 0.9
    relevant = test[test["label"] == 1].groupby("user_id")["item_id"].agg(set).to_dict()
    metrics = list_metrics(test, scores, relevant)
    assert metrics["ndcg@10"] > metrics["candidate_ndcg@10"] + 0.3
    assert trained.history and trained.best_epoch >= 1


def test_implements_the_serving_protocol(trained: TrainedRanker) -> None:
    ranker: Ranker = trained.ranker
    assert ranker.version == "test"
    assert ranker.score({}, np.zeros(0), np.zeros(0)).shape == (0,)


def test_training_and_serving_layouts_encode_the_same(trained: TrainedRanker) -> None:
    frame = planted(seed=2)
    one = frame[frame["list_id"] == 3].reset_index(drop=True)
    encoder = trained.ranker.encoder
    offline = encoder.encode(one, one["candidate_score"].to_numpy(), one["embedding_score"].to_numpy(),
                             one["list_id"].to_numpy())
    online = encoder.encode(serving_layout(one), one["candidate_score"].to_numpy(), one["embedding_score"].to_numpy())
    for a, b in [(offline.dense, online.dense), (offline.categorical, online.categorical), (offline.wide, online.wide)]:
        assert np.array_equal(a.numpy(), b.numpy())
    served = trained.ranker.score(serving_layout(one), one["candidate_score"].to_numpy(),
                                  one["embedding_score"].to_numpy())
    batch = trained.ranker.score_lists(frame, frame["candidate_score"].to_numpy(), frame["embedding_score"].to_numpy(),
                                       frame["list_id"].to_numpy())[frame["list_id"].to_numpy() == 3]
    np.testing.assert_allclose(served, batch, rtol=1e-5, atol=1e-6)


def test_missing_features_read_as_typed_defaults(trained: TrainedRanker) -> None:
    one = planted(seed=3).head(6)
    scores, embedding = one["candidate_score"].to_numpy(), one["embedding_score"].to_numpy()
    missing = serving_layout(one)
    missing["item_features__interactions_30d"] = [None, float("nan"), None, 1.0, None, None]
    missing["item_features__category"] = [None] * 6
    del missing["request_features__hour_of_day"]  # a column the layout lacks entirely
    defaulted = serving_layout(one)
    defaulted["item_features__interactions_30d"] = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    defaulted["item_features__category"] = ["unknown"] * 6
    defaulted["request_features__hour_of_day"] = [12.0] * 6
    got = trained.ranker.score(missing, scores, embedding)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, trained.ranker.score(defaulted, scores, embedding))


def test_save_and_load_through_a_temporary_model_store(trained: TrainedRanker, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    start, end = datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 6, 1, tzinfo=UTC)
    tag = save_ranker(trained, "ranker_v1", start, end, {"auc": 0.9}, home=tmp_path)
    assert (tmp_path / "models" / "ranker").is_dir()
    loaded = load_ranker(tag, home=tmp_path)
    assert isinstance(loaded, WideDeepRanker) and loaded.version == "test"
    assert loaded.metadata["feature_service"] == "ranker_v1"
    assert loaded.metadata["data_start"] == start.isoformat() and loaded.metadata["metrics"] == {"auc": 0.9}
    one = planted(seed=4).head(30)
    args = (serving_layout(one), one["candidate_score"].to_numpy(), one["embedding_score"].to_numpy())
    np.testing.assert_array_equal(trained.ranker.score(*args), loaded.score(*args))
    assert FeatureEncoder.from_state(trained.ranker.encoder.state()) == trained.ranker.encoder


def test_a_saved_ranker_keeps_a_sample_of_its_training_rows_for_drift(trained: TrainedRanker, tmp_path: Path) -> None:
    from dataclasses import replace

    from monitoring.drift_features import ranker_reference, reference_features
    from training.ranker_train import reference_sample

    examples = planted(seed=5)
    sample = reference_sample(examples, rows=50)
    assert len(sample) == 50 and "label" not in sample.columns
    start, end = datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 6, 1, tzinfo=UTC)
    assert ranker_reference(home=tmp_path) is None  # an empty store: drift falls back to the training set
    save_ranker(replace(trained, reference=sample), "ranker_v1", start, end, {}, home=tmp_path)
    path = ranker_reference(home=tmp_path)
    assert path is not None
    features = reference_features(path)
    assert len(features) == 50 and "item_features__interactions_30d" in features.columns


def test_wide_crosses_are_the_hash_of_each_rows_key() -> None:
    """The crosses, hashed once per distinct pair, equal crc32 of each row's `name=a|b` key (the definition),
    missing values and columns the layout lacks (device, weekend) included."""
    import zlib

    frame = planted(lists=3, depth=50, seed=3)
    layout = serving_layout(frame)
    layout["item_features__category"][:5] = [None] * 5
    layout["user_item_features__user_category_affinity"][5:9] = [None, 0.05, 0.35, 1e-9]
    encoder = FeatureEncoder(COLUMNS)
    got = encoder._crosses(layout, len(frame))

    def text(ref: str, default: str) -> list[str]:
        raw = layout.get(ref)
        return [default] * len(frame) if raw is None else [default if v is None else str(v) for v in raw]

    def bucket(ref: str, edges: tuple[float, ...]) -> list[str]:
        raw = np.asarray([np.nan if v is None else v for v in layout[ref]], dtype=float)
        return [str(b) for b in np.digitize(np.where(np.isfinite(raw), raw, 0.0), edges)]

    cat, eng = text("item_features__category", "unknown"), text("user_features__engagement_level", "low")
    keys = {
        "cat": cat,
        "cat_x_aff": [f"{c}|{a}" for c, a in zip(cat, bucket("user_item_features__user_category_affinity",
                                                             (1e-9, 0.05, 0.1, 0.2, 0.35)))],
        "dev_x_cat": [f"unknown|{c}" for c in cat],
        "eng_x_cat": [f"{e}|{c}" for e, c in zip(eng, cat)],
        "hour_x_cat": [f"{h}|{c}" for h, c in zip(bucket("request_features__hour_of_day", (6, 12, 18)), cat)],
        "wkd_x_cat": [f"unknown|{c}" for c in cat],
        "pop_x_eng": [f"{p}|{e}" for p, e in zip(bucket("item_features__interactions_30d", (1, 3, 10, 30)), eng)],
    }
    expected = np.column_stack([[zlib.crc32(f"{name}={k}".encode()) % encoder.wide_buckets for k in column]
                                for name, column in keys.items()])
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got[:, 1])) > 3  # the pairs differ: not one bucket for all



@pytest.mark.parametrize(("hidden", "sizes"),
                         [((128, 64), (5, 3, 7)), ((32,), (5, 3, 7)), ((), (5, 3, 7)), ((16,), ())])
def test_the_folded_network_scores_as_the_ensemble(hidden: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    from recsys.models.ranker import Encoded, Ensemble, FoldedEnsemble, WideDeepConfig

    torch.manual_seed(0)
    config = WideDeepConfig(dense=9, categorical_sizes=sizes, wide_buckets=64, embedding_dim=4, hidden=hidden)
    model = Ensemble(config, members=3).eval()
    with torch.no_grad():
        for member in model.members:
            member.cross.weight.normal_()  # trained crosses are not zero
    rows = 40
    categorical = torch.stack([torch.randint(0, n, (rows,)) for n in sizes], dim=1) if sizes else \
        torch.zeros((rows, 0), dtype=torch.int64)
    batch = Encoded(torch.randn(rows, 9), categorical, torch.randint(0, 64, (rows, 6)))
    with torch.no_grad():
        expected = model(batch).numpy()
    np.testing.assert_allclose(FoldedEnsemble(model)(batch), expected, rtol=1e-5, atol=1e-5)


def test_served_scores_follow_weights_changed_after_a_first_score(trained: TrainedRanker) -> None:
    one = planted(seed=5).head(20)
    args = (serving_layout(one), one["candidate_score"].to_numpy(), one["embedding_score"].to_numpy())
    ranker = trained.ranker
    before = ranker.score(*args)
    state = {k: v.clone() for k, v in ranker.model.state_dict().items()}
    shifted = {k: v + 1.0 if k.endswith("linear.bias") else v for k, v in state.items()}
    try:
        ranker.model.load_state_dict(shifted)  # in place, as an optimiser step writes
        np.testing.assert_allclose(ranker.score(*args), before + 1.0, rtol=1e-5, atol=1e-5)
    finally:
        ranker.model.load_state_dict(state)
    np.testing.assert_allclose(ranker.score(*args), before, rtol=1e-6, atol=1e-6)
