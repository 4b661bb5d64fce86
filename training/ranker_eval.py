"""The ranker judged two ways: on its own (AUC, NDCG@10 of re-ranked lists against the candidate
order) and as the last stage of our recommender in the evaluation harness (`RankedCandidates`).

`RankedCandidates.fit(train)` never sees test rows: it carves each user's latest interactions of
``train`` as the ranker's window, fits candidates on the rest, labels the window users' candidate
lists with what they took in the window, trains the ranker on those lists (its early stopping on a
held-out share of them), then refits the candidates on all of ``train`` (or re-ranks a candidate source it is
given, e.g. the daily pipeline's new version). `recommend` re-ranks each user's top ``depth`` candidates as of one
second after their last training event. `RankerEvalConfig.history_train` can warm-start the window lists' model
from an earlier run's (`history_model`): each user's window is their latest share of a growing train, so an earlier
run's history is a prefix of every user's history now and never holds a window event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore
from sklearn.metrics import roc_auc_score

from embeddings.train import TrainConfig, Trained
from recsys.features.service import RANKER_SERVICE, service_layout
from recsys.models.ranker import WideDeepRanker, columns_of
from recsys.settings import Settings
from recsys.stores.lake import Lake
from training.candidate_eval import MergedCandidates
from training.evaluation import ndcg_at_k, positives, temporal_split
from training.ranker_data import CandidateSource, ScoredSource, candidate_lists, request_times, with_features
from training.ranker_train import (
    RankerTrainConfig,
    TrainedRanker,
    plot_curves,
    reference_sample,
    save_ranker,
    train_ranker,
)
from training.tracking import RunRecord, track


@dataclass(frozen=True)
class RankerEvalConfig:
    depth: int = 100  # candidates re-ranked per user
    window_fraction: float = 0.2  # each user's latest share of train that labels the ranker's lists
    service: str = RANKER_SERVICE
    candidate_epochs: int = 5
    train: RankerTrainConfig = field(default_factory=RankerTrainConfig)
    history_train: TrainConfig | None = None  # the window lists' candidate model (None: `candidate_epochs` scratch)
    max_users: int | None = None  # window users whose lists train it, and test users measured (seeded sample)


def list_metrics(lists: pd.DataFrame, scores: np.ndarray, relevant: Mapping[str, Collection[str]],
                 k: int = 10) -> dict[str, float]:
    """AUC of ``scores`` on the lists' labels; NDCG@k of the lists ordered by score and by candidate score.

    Relevance is the user's full set of next items (those the candidates missed count too), as in the
    harness, so the NDCGs are comparable with its table.
    """
    frame = lists.assign(_score=scores)
    labels = frame["label"].to_numpy()
    auc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")
    users = {u: relevant[u] for u in frame["user_id"].unique() if u in relevant}

    def ordered(column: str) -> dict[str, list[str]]:
        ranked = frame.sort_values(["list_id", column], ascending=[True, False], kind="stable")
        return ranked.groupby("user_id", sort=False)["item_id"].agg(list).to_dict()

    return {"auc": auc, f"ndcg@{k}": ndcg_at_k(ordered("_score"), users, k),
            f"candidate_ndcg@{k}": ndcg_at_k(ordered("candidate_score"), users, k),
            "lists": float(len(users)), "rows": float(len(frame))}


class RankedCandidates:
    """Merged candidates re-ranked by the Wide & Deep ranker: our final lists, as a `Recommender`."""

    name = "candidates + ranker"

    def __init__(self, items: pd.DataFrame, store: FeatureStore, config: RankerEvalConfig = RankerEvalConfig(),
                 progress: Callable[[str], None] = print,
                 reuse: MergedCandidates | None = None) -> None:
        """``reuse``: the harness's own merged candidates, listed before this one; when fitted on the
        same training frame, its model is the one re-ranked (same candidates, one training run less)
        and its settings are those of the window's candidate model."""
        self.items, self.store, self.config, self.progress, self.reuse = items, store, config, progress, reuse
        self.trained: TrainedRanker | None = None
        self.source: ScoredSource | None = None
        self.request_at: dict[str, pd.Timestamp] = {}
        self.data_window: tuple[pd.Timestamp, pd.Timestamp] | None = None
        self.history_model: Trained | None = None  # the window lists' two-tower model, for a later warm start

    @property
    def ranker(self) -> WideDeepRanker:
        assert self.trained is not None, "fit first"
        return self.trained.ranker

    def fit(self, train: pd.DataFrame, source: ScoredSource | None = None) -> None:
        """``source``: the candidates the fitted ranker re-ranks (e.g. the daily pipeline's new version, already
        trained on ``train``); None: a candidate model fitted on ``train`` here."""
        history, window = temporal_split(train, self.config.window_fraction)
        relevant = window.groupby("user_id")["item_id"].agg(set).to_dict()
        users = self._sample(sorted(relevant))
        self.progress(f"ranker window: {len(history):,} history rows, {len(window):,} window rows, "
                      f"{len(users):,} of {len(relevant):,} users")
        window_source = self._candidates(history)
        self.history_model = window_source.fitted.trained
        lists = candidate_lists(window_source, users, request_times(history), relevant, self.config.depth)
        examples = with_features(self.store, lists, self.config.service)
        columns = columns_of(service_layout(self.store, self.config.service).specs)
        self.trained = train_ranker(examples, columns, self.config.train, self.progress)
        self.trained.reference = reference_sample(examples)
        self.data_window = (pd.Timestamp(train["event_time"].min()), pd.Timestamp(train["event_time"].max()))
        self.source = source if source is not None else self._candidates(train)
        self.request_at = request_times(train)

    def _sample(self, users: list[str]) -> list[str]:
        cap = self.config.max_users
        if cap is None or len(users) <= cap:
            return users
        return sorted(np.random.default_rng(0).choice(np.array(users, dtype=object), cap, replace=False).tolist())

    def _candidates(self, frame: pd.DataFrame) -> CandidateSource:
        reuse = self.reuse
        if reuse is not None and reuse.fitted_on is frame:
            return CandidateSource(reuse, self.items)
        if reuse is not None:
            fitted = MergedCandidates(self.items, reuse.config, reuse.quotas, reuse.nprobe, reuse.weights)
        else:
            fitted = MergedCandidates(self.items, self.config.history_train or TrainConfig(
                epochs=self.config.candidate_epochs))
        fitted.fit(frame)
        return CandidateSource(fitted, self.items)

    def scored_lists(self, users: Sequence[str], relevant: Mapping[str, Collection[str]] | None = None
                     ) -> tuple[pd.DataFrame, np.ndarray]:
        """Each user's top `depth` candidates with features (as of their request time) and ranker scores."""
        assert self.source is not None, "fit first"
        lists = candidate_lists(self.source, list(users), self._times(users), relevant or {}, self.config.depth)
        if lists.empty:
            return lists, np.zeros(0)
        examples = with_features(self.store, lists, self.config.service)
        scores = self.ranker.score_lists(examples, examples["candidate_score"].to_numpy(),
                                         examples["embedding_score"].to_numpy(), examples["list_id"].to_numpy())
        return examples, scores

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        """The re-ranked top `depth`, then the rest of the candidates in their own order, up to k."""
        assert self.source is not None, "fit first"
        unique = list(dict.fromkeys(users))
        examples, scores = self.scored_lists(unique)
        ranked = (examples.assign(_score=scores).sort_values(["list_id", "_score"], ascending=[True, False],
                                                              kind="stable")
                  .groupby("user_id", sort=False)["item_id"].agg(list).to_dict()) if len(examples) else {}
        out = {}
        for user in unique:
            head = ranked.get(user, [])
            tail: list[str] = []
            if k > len(head):
                ids, _, _ = self.source.scored(user, k)
                taken = set(head)
                tail = [i for i in ids if i not in taken]
            out[user] = (head + tail)[:k]
        return {u: out[u] for u in users}

    def _times(self, users: Sequence[str]) -> dict[str, pd.Timestamp]:
        fallback = max(self.request_at.values()) if self.request_at else pd.Timestamp.now(tz="UTC")
        return {u: self.request_at.get(u, fallback) for u in users}

    def holdout_metrics(self, test: pd.DataFrame) -> dict[str, float]:
        """AUC and NDCG@10 (ranker vs candidate order) on the test users' lists: the temporal hold-out."""
        relevant = test.groupby("user_id")["item_id"].agg(set).to_dict()
        examples, scores = self.scored_lists(self._sample(sorted(relevant)), relevant)
        return list_metrics(examples, scores, relevant)


@dataclass(frozen=True)
class RankerRun:
    tag: str
    metrics: dict[str, float]
    curve: Path


def train_and_save(lake_root: Path, items: pd.DataFrame, store: FeatureStore, out_dir: Path,
                   config: RankerEvalConfig = RankerEvalConfig(), home: Path | None = None,
                   progress: Callable[[str], None] = print, tracking: Settings | None = None) -> RankerRun:
    """Train on the harness's temporal split of the lake, measure on its hold-out, save to the model store.

    The saved model is the one measured: trained on data before every user's hold-out, so its
    metrics are honest; the data window in its metadata says which events it learned from.
    `tracking`: also record the run in experiment tracking (see `publish_ranker`).
    """
    train, _ = split_lake(lake_root)
    ranked = RankedCandidates(items, store, config, progress)
    ranked.fit(train)
    return publish_ranker(ranked, lake_root, out_dir, home, progress, tracking)


def split_lake(lake_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The harness's per-user temporal split of the lake's positives: (train, test)."""
    table = Lake(lake_root).interactions(columns=["user_id", "item_id", "event_time", "action_type", "value"])
    return temporal_split(positives(table))


def publish_ranker(ranked: RankedCandidates, lake_root: Path, out_dir: Path, home: Path | None = None,
                   progress: Callable[[str], None] = print, tracking: Settings | None = None) -> RankerRun:
    """Measure a ranker fitted on the split's training part on its hold-out, plot its curve, save it to the
    model store with those metrics. `recsys evaluate --save-ranker` publishes the ranker it evaluated, so
    a run trains it once. `tracking`: these settings' experiment tracking records the run (config, metrics,
    per-epoch curves, plot) and registers the BentoML tag as a version of `ranker`; a tracking failure is
    reported and the ranker is published all the same."""
    assert ranked.trained is not None and ranked.data_window is not None, "fit first"
    _, test = split_lake(lake_root)
    metrics = ranked.holdout_metrics(test)
    progress(f"hold-out: AUC {metrics['auc']:.4f}, NDCG@10 {metrics['ndcg@10']:.4f} re-ranked vs "
             f"{metrics['candidate_ndcg@10']:.4f} in candidate order ({int(metrics['lists'])} users)")
    out_dir.mkdir(parents=True, exist_ok=True)
    curve = out_dir / "ranker_curve.png"
    plot_curves(ranked.trained.history, curve)
    start, end = (t.to_pydatetime() for t in ranked.data_window)
    tag = save_ranker(ranked.trained, ranked.config.service, start, end, metrics, home)
    (out_dir / "ranker_metrics.json").write_text(json.dumps({"tag": tag, **metrics}, indent=2) + "\n")
    run = RankerRun(tag, metrics, curve)
    if tracking is not None:
        track(tracking, ranker_record(ranked, run, out_dir / "ranker_metrics.json"), progress)
    return run


def ranker_record(ranked: RankedCandidates, run: RankerRun, metrics_file: Path | None = None) -> RunRecord:
    """The published ranker's run: its evaluation and training config, hold-out metrics, best epoch, one
    curve per ensemble member and quantity (train and validation loss, validation AUC, by epoch)."""
    assert ranked.trained is not None and ranked.data_window is not None, "fit first"
    history = ranked.trained.history
    curves: dict[str, list[float]] = {}
    for row in sorted(history, key=lambda h: (int(h.get("member", 0)), int(h["epoch"]))):
        for quantity in ("train_loss", "val_loss", "val_auc"):
            curves.setdefault(f"{quantity}/member_{int(row.get('member', 0)) + 1}", []).append(float(row[quantity]))
    start, end = (t.to_pydatetime() for t in ranked.data_window)
    return RunRecord(kind="ranker", version=run.tag.partition(":")[2], serving_ref=run.tag,
                     params=asdict(ranked.config), metrics={**run.metrics, "best_epoch": ranked.trained.best_epoch},
                     curves=curves, first_step=1, artifacts=[p for p in (run.curve, metrics_file) if p is not None],
                     data_start=start, data_end=end)
