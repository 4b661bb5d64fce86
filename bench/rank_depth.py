"""Final-list quality against the serving rank depth: NDCG@10 (and the harness's other metrics) of the lists the
serving pipeline answers when its ranker scores the top 50, 100, 200, 400 or all of the merged candidates, with
the same fitted models at every depth.

Usage (the local profile's imported ml-latest-small, as `recsys --profile local evaluate`):

    .venv/bin/python -m bench.rank_depth --before 2018-09-25 --train-depths 100    # bench/results/rank_depth.json
    .venv/bin/python -m bench.rank_depth [--depths 50,100,200,400,all] [--seed 0] [--users-sample N]
                                         [--train-depths 100,300] [--before TIME] [--no-harness] [--out PATH]

(`--before 2018-09-25` keeps ml-latest-small alone: after `make demo` the local lake also holds its simulated day,
events generated from the service's own answers, which land in most users' test part. About 12 minutes on 2
shared cores with one ranker, most of it fitting.)

It does what `recsys evaluate` does for one seed, with the same objects (`training.table.TableModels` and
`monitoring.served.with_served`) on the same temporal split: fits the merged candidates, the ranker (trained on
lists `RankerEvalConfig.depth` deep: 100, what `evaluate` and `train-ranker` use) and the served world (a lake,
features and candidate artifact of the training part only). Then, for every depth, it opens the serving
pipeline on that world with `serving.rank_depth` set to the depth and replays every test user through
`ServedPipeline.recommend` (the `served pipeline (final lists)` row of `evaluate`). Only the depth changes
between replays. Each further `--train-depths` entry trains one more ranker on lists that deep (the same
candidates, seed and window) and replays it at every depth too. With the harness (default), the
`candidates + ranker` row of `evaluate` (training's offline lists, features from the point-in-time join) is
re-ranked at every depth as well.

Noise: per-user NDCG@10, a bootstrap (2,000 resamples of the users) 95% interval of each mean and, paired on
the same users, of each depth's difference from ranking all; the seed standard deviation of the served row in
`bench/results/evaluation.json` (models retrained per seed) is recorded beside it. Cost: the ranker's
`score` call per request (rows scored, milliseconds) and the pipeline's stage times (features, ranking,
whole answer), on this shared machine. Output: `bench/results/rank_depth.json` and `rank_depth.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bench.common import CACHE, RESULTS, record
from bento_services.pipeline.batch import batch_settings
from bento_services.pipeline.contracts import RecommendationRequest, RecommendationResponse
from bento_services.pipeline.pipeline import RecommendationPipeline, build_pipeline
from cli.app import TUNED
from embeddings.train import TrainConfig
from monitoring.served import ServedPipeline, with_served
from recsys.backends import open_lake
from recsys.errors import InvalidInputError
from recsys.features.store import open_feature_store
from recsys.settings import Settings
from training import tuning
from training.candidate_eval import MergedCandidates
from training.evaluation import catalog_coverage, hit_matrix, ndcg_at_k, split_for
from training.ranker_data import request_times
from training.ranker_eval import RankedCandidates
from training.table import TableModels

ALL = 100_000  # a rank depth past any candidate list: the ranker scores every candidate
FUSION = "no ranker (fusion order)"
BOOTSTRAP = 2_000
FINAL_K = 10


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class CountingRanker:
    """The ranker, with each `score` call's rows and seconds recorded (everything else delegated)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.version = inner, inner.version
        self.calls: list[tuple[int, float]] = []

    def score(self, features: dict[str, list[object]], candidate_scores: np.ndarray,
              embedding_scores: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        scores = self.inner.score(features, candidate_scores, embedding_scores)
        self.calls.append((len(candidate_scores), time.perf_counter() - started))
        return cast(np.ndarray, scores)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingPipeline:
    """The pipeline, with each answer kept by user (what `ServedPipeline.recommend` asks is unchanged)."""

    def __init__(self, inner: RecommendationPipeline) -> None:
        self.inner = inner
        self.answers: dict[str, RecommendationResponse] = {}

    def recommend(self, request: RecommendationRequest, **options: Any) -> RecommendationResponse:
        answer = self.inner.recommend(request, **options)
        self.answers[request.user_id] = answer
        return answer

    def close(self) -> None:
        self.inner.close()


def per_user(recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]]) -> dict[str, np.ndarray]:
    """Per user (in `relevant`'s order): NDCG@10 (the harness's formula), recall@10 and @20."""
    hits, sizes = hit_matrix(recommended, relevant, 20)
    discounts = 1.0 / np.log2(np.arange(2, FINAL_K + 2))
    ideal = np.cumsum(discounts)[np.minimum(sizes, FINAL_K).astype(int) - 1]
    ndcg = (hits[:, :FINAL_K] * discounts).sum(axis=1) / ideal
    if not np.isclose(ndcg.mean(), ndcg_at_k(recommended, relevant, FINAL_K)):
        raise AssertionError("per-user NDCG@10 disagrees with training.evaluation.ndcg_at_k")
    return {"ndcg@10": ndcg, "recall@10": hits[:, :10].sum(axis=1) / sizes,
            "recall@20": hits[:, :20].sum(axis=1) / sizes}


def interval(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    """Bootstrap 95% interval of the mean over users."""
    picks = rng.integers(0, len(values), size=(BOOTSTRAP, len(values)))
    means = values[picks].mean(axis=1)
    return [round(float(np.quantile(means, 0.025)), 5), round(float(np.quantile(means, 0.975)), 5)]


def summary(lists: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]], train_items: int,
            reference: np.ndarray | None, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Means with bootstrap intervals, coverage@20, and the paired difference from `reference` (per-user NDCG)."""
    values = per_user(lists, relevant)
    out: dict[str, Any] = {}
    for name, column in values.items():
        out[name] = round(float(column.mean()), 5)
        out[f"{name}_ci95"] = interval(column, np.random.default_rng(seed))
    out["ndcg@10_user_std"] = round(float(values["ndcg@10"].std()), 5)
    out["coverage@20"] = round(catalog_coverage(lists, 20, train_items), 5)
    if reference is not None:
        delta = values["ndcg@10"] - reference
        out["ndcg@10_minus_all"] = round(float(delta.mean()), 5)
        out["ndcg@10_minus_all_ci95"] = interval(delta, np.random.default_rng(seed))
    return out, values["ndcg@10"]


def milliseconds(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    if len(array) == 0:
        return {}
    return {"mean": round(float(array.mean()), 2), "p50": round(float(np.quantile(array, 0.5)), 2),
            "p90": round(float(np.quantile(array, 0.9)), 2), "p99": round(float(np.quantile(array, 0.99)), 2)}


def replay(served: ServedPipeline, ranker: Any, depth: int, users: list[str], k: int
           ) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """`ServedPipeline.recommend` on a pipeline opened at `serving.rank_depth = depth`; the lists and costs."""
    assert served.world is not None, "fit first"
    world = served.world
    settings = world.model_copy(update={"serving": world.serving.model_copy(update={"rank_depth": depth})})
    served.close()
    counting = CountingRanker(ranker) if ranker is not None else None  # None: fusion order (candidate scores)
    recording = RecordingPipeline(build_pipeline(batch_settings(settings), ranker=counting))
    served.pipeline = cast(RecommendationPipeline, recording)
    started = time.perf_counter()
    lists = served.recommend(users, k)
    wall = time.perf_counter() - started
    served.close()
    stages = [a.stage_ms for a in recording.answers.values()]
    cost = {"replay_s": round(wall, 1), "answers_by_rung": dict(served.degradations),
            "rows_scored": milliseconds([rows for rows, _ in counting.calls] if counting else []),
            "ranker_score_ms": milliseconds([s * 1000 for _, s in counting.calls] if counting else []),
            "stage_ms": {stage: milliseconds([s.get(stage, 0.0) for s in stages])
                         for stage in ("candidates", "features", "ranking", "postprocess")},
            "answer_ms": milliseconds([sum(s.values()) for s in stages])}
    return lists, cost


def harness_lists(ranked: RankedCandidates, depth: int, users: list[str], k: int
                  ) -> tuple[dict[str, list[str]], float]:
    """The `candidates + ranker` row's lists with its top `depth` candidates re-ranked (its ranker unchanged)."""
    trained_depth = ranked.config
    ranked.config = replace(trained_depth, depth=depth)
    try:
        started = time.perf_counter()
        lists = ranked.recommend(users, k)
        return lists, time.perf_counter() - started
    finally:
        ranked.config = trained_depth


def seed_noise() -> dict[str, Any]:
    """The seed spread `recsys evaluate` recorded (bench/results/evaluation.json), for comparison."""
    try:
        results = json.loads((RESULTS / "evaluation.json").read_text())["results"]
    except (OSError, KeyError, ValueError):
        return {}
    return {row["recommender"]: {"ndcg@10": row.get("ndcg@10"), "ndcg@10_std_over_seeds": row.get("ndcg@10_std"),
                                 "seeds": row.get("seeds")}
            for row in results if row["recommender"] in ("candidates + ranker", "served pipeline (final lists)")}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (quality, cost) = plt.subplots(1, 2, figsize=(11, 4.5))
    for row_name, rows in results.items():
        for trained, by_depth in rows.items():
            if trained == FUSION:
                quality.axhline(by_depth[0]["ndcg@10"], color="grey", linestyle=":", label=f"{row_name}, {trained}")
                continue
            # `all` at the most rows the ranker scored (served) or the longest candidate list (1,000)
            xs = [entry["depth"] if entry["depth"] != "all" else entry.get("rows_scored_max", 1000)
                  for entry in by_depth]
            ys = np.array([entry["ndcg@10"] for entry in by_depth])
            lo = ys - np.array([entry["ndcg@10_ci95"][0] for entry in by_depth])
            hi = np.array([entry["ndcg@10_ci95"][1] for entry in by_depth]) - ys
            quality.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=f"{row_name}, {trained}")
            if row_name == "served":
                cost.plot(xs, [entry["cost"]["ranker_score_ms"].get("p50", np.nan) for entry in by_depth],
                          marker="o", label=f"ranker score p50, {trained}")
                cost.plot(xs, [entry["cost"]["stage_ms"]["features"].get("p50", np.nan) for entry in by_depth],
                          marker="s", linestyle="--", label=f"features stage p50, {trained}")
    quality.set(xscale="log", xlabel="rank depth (candidates the ranker scores)", ylabel="NDCG@10 (95% bootstrap)",
                title="final-list NDCG@10 vs rank depth")
    cost.set(xscale="log", xlabel="rank depth", ylabel="ms per request", title="per-request cost (shared 2 cores)")
    for ax in (quality, cost):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", default="50,100,200,400,all", help="serving.rank_depth values ('all': every "
                        "candidate)")
    parser.add_argument("--train-depths", default="100,300", help="list depths of the rankers trained (the first is "
                        "evaluate's own, RankerEvalConfig.depth)")
    parser.add_argument("--seed", type=int, default=0, help="evaluate's seed number (models' seeds are offset by it)")
    parser.add_argument("--epochs", type=int, default=12, help="two-tower epochs (evaluate's default)")
    parser.add_argument("--users-sample", type=int, default=None, help="a seeded sample of test users (default all)")
    parser.add_argument("--before", default=None, help="only the lake's events before this time (ISO, UTC): "
                        "2018-09-25 keeps ml-latest-small and leaves out the demo's simulated day")
    parser.add_argument("--no-harness", action="store_true", help="skip the `candidates + ranker` row")
    parser.add_argument("--out", type=Path, default=RESULTS / "rank_depth.json")
    args = parser.parse_args(argv)
    depths = [ALL if d.strip() == "all" else int(d) for d in args.depths.split(",")]
    if ALL not in depths:
        raise InvalidInputError("--depths must include 'all': every depth is compared with ranking all")
    train_depths = [int(d) for d in args.train_depths.split(",")]

    settings = Settings.load(profile="local")
    items = open_lake(settings).latest_snapshot("items")
    if items is None:
        raise InvalidInputError("no item catalog in the lake; import data first (make demo)")
    table = open_lake(settings).interactions(columns=["user_id", "item_id", "event_time", "action_type", "value"])
    if args.before is not None:  # e.g. ml-latest-small alone: `make demo`'s simulated day appends events after it
        before = pd.Timestamp(args.before)
        before = before.tz_localize("UTC") if before.tzinfo is None else before
        table = table.filter(pc.less(table["event_time"], pa.scalar(before.to_pydatetime(),
                                                                    table.schema.field("event_time").type)))
    train, test = split_for(table, validation=False)
    relevant = {u: set(i) for u, i in test.groupby("user_id", sort=True)["item_id"]}
    users = sorted(relevant)
    if args.users_sample is not None and args.users_sample < len(users):
        users = sorted(np.random.default_rng(0).choice(users, size=args.users_sample, replace=False).tolist())
        relevant = {u: relevant[u] for u in users}
    train_items = int(train["item_id"].nunique())
    # Users by the quartile of their request time (1996..2018): the served world's item rows are its newest (as of
    # the end of the training part) whatever the request time, where training's point-in-time join reads them as of
    # it; quality by quartile shows whether the gap grows with the distance between the two.
    at = pd.Series(request_times(train)).reindex(users)
    quartile = pd.qcut(at.rank(method="first"), 4, labels=False).to_numpy()
    edges = [str(at.quantile(q).date()) for q in (0.0, 0.25, 0.5, 0.75, 1.0)]

    def by_quartile(values: np.ndarray) -> dict[str, float]:
        return {f"q{q + 1} {edges[q]}..{edges[q + 1]}": round(float(values[quartile == q].mean()), 5)
                for q in range(4)}
    log(f"split: {len(train):,} train rows, {len(test):,} test rows; {len(users)} users evaluated")

    # The models `recsys evaluate` builds for this seed, and the served row after them, fitted in its order.
    config = TrainConfig(epochs=args.epochs)
    models = TableModels(items, config, tuning.load(TUNED), open_feature_store(settings), progress=log)
    row = with_served(models, settings, CACHE / "rank_depth" / "worlds", config, progress=log)(args.seed)
    merged = next(m for m in row if isinstance(m, MergedCandidates))
    served = next(m for m in row if isinstance(m, ServedPipeline))
    fit_s: dict[str, float] = {}

    def fitted(number: int, trained_depth: int) -> RankedCandidates:
        if number == 0:  # evaluate's own ranker of this seed, on the harness's merged candidates
            model = models.ranked[args.seed]
            model.config = replace(model.config, depth=trained_depth)
        else:  # one more, the same but for the depth of its training lists
            base = models.ranked[args.seed]
            model = RankedCandidates(items, base.store, replace(base.config, depth=trained_depth), log, reuse=merged)
        started = time.perf_counter()
        model.fit(train)
        fit_s[f"ranker trained at depth {trained_depth}"] = time.perf_counter() - started
        log(f"ranker trained at depth {trained_depth}: fitted in {time.perf_counter() - started:.0f}s")
        return model

    started = time.perf_counter()
    merged.fit(train)
    fit_s["candidates"] = time.perf_counter() - started
    ranked = {f"ranker trained at depth {train_depths[0]}": fitted(0, train_depths[0])}
    started = time.perf_counter()
    served.fit(train)  # the world of the training part; its pipeline is reopened per depth below
    fit_s["served world"] = time.perf_counter() - started
    served.close()
    log(f"served world built in {fit_s['served world']:.0f}s")

    k = 1000  # what `evaluate` asks every recommender for (its largest k)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def measure(row_name: str, name: str, run: Callable[[int], tuple[dict[str, list[str]], dict[str, Any]]]
                ) -> np.ndarray:
        measured: dict[int, tuple[dict[str, list[str]], dict[str, Any]]] = {}
        for depth in sorted(depths, reverse=True):  # `all` first: the reference of the paired differences
            measured[depth] = run(depth)
            log(f"{row_name}, {name}, depth {'all' if depth == ALL else depth}: {measured[depth][1]}")
        _, reference = summary(measured[ALL][0], relevant, train_items, None, args.seed)
        entries = []
        for depth in depths:
            lists, cost = measured[depth]
            figures, values = summary(lists, relevant, train_items, reference, args.seed)
            entry = {"depth": "all" if depth == ALL else depth, **figures,
                     "ndcg@10_by_request_quartile": by_quartile(values), "cost": cost}
            if cost.get("rows_scored"):
                entry["rows_scored_max"] = int(max(cost["rows_scored"]["p99"], cost["rows_scored"]["mean"]))
            entries.append(entry)
            log(f"{row_name}, {name}, depth {entry['depth']}: NDCG@10 {figures['ndcg@10']:.4f} "
                f"{figures['ndcg@10_ci95']}, vs all {figures['ndcg@10_minus_all']:+.4f} "
                f"{figures['ndcg@10_minus_all_ci95']}")
        results.setdefault(row_name, {})[name] = entries
        write()  # after every row: a run cut short keeps what it measured
        return reference

    def write() -> None:
        record("rank_depth", {
            "what": "final-list NDCG@10 against serving.rank_depth, same fitted models at every depth (see the "
                    "script's docstring)",
            "command": "python -m bench.rank_depth " + " ".join(sys.argv[1:] if argv is None else argv),
            "split": "evaluate's temporal split of the local lake (last 20% per user); universe: items in train",
            "events_before": args.before, "train_rows": len(train), "test_rows": len(test),
            "users": len(users), "users_sample": args.users_sample, "seed": args.seed, "k_asked": k,
            "bootstrap": f"{BOOTSTRAP} resamples of users, seeded; ci95 of the mean, and of the paired per-user "
                         "difference from depth all (same models, same users)",
            "fit_s": {name: round(value, 1) for name, value in fit_s.items()},
            "seed_noise_from_evaluation_json": seed_noise(),
            "results": results,
        }, args.out)
        plot(results, args.out.with_suffix(".png"))
        log(f"wrote {args.out} and {args.out.with_suffix('.png')}")

    first = next(iter(ranked))
    Run = Callable[[int], tuple[dict[str, list[str]], dict[str, Any]]]

    def served_at(model: RankedCandidates) -> Run:
        return lambda depth: replay(served, model.ranker, depth, users, k)

    def harness_at(model: RankedCandidates) -> Run:
        return lambda depth: _timed(harness_lists(model, depth, users, k))

    reference = measure("served", first, served_at(ranked[first]))
    lists, cost = replay(served, None, ALL, users, k)  # no ranker: the served lists in fusion order
    figures, values = summary(lists, relevant, train_items, reference, args.seed)
    results["served"][FUSION] = [{"depth": 0, **figures, "ndcg@10_by_request_quartile": by_quartile(values),
                                  "cost": cost}]
    log(f"served, {FUSION}: NDCG@10 {figures['ndcg@10']:.4f} {figures['ndcg@10_ci95']}, vs {first} at depth all "
        f"{figures['ndcg@10_minus_all']:+.4f} {figures['ndcg@10_minus_all_ci95']}")
    write()
    for number, trained_depth in enumerate(train_depths[1:], start=1):
        name = f"ranker trained at depth {trained_depth}"
        ranked[name] = fitted(number, trained_depth)
        measure("served", name, served_at(ranked[name]))
    if not args.no_harness:
        for name, model in ranked.items():
            measure("harness", name, harness_at(model))


def _timed(found: tuple[dict[str, list[str]], float]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    return found[0], {"recommend_s": round(found[1], 1)}


if __name__ == "__main__":
    main()
