"""Offline evaluation of recommenders: a temporal split of lake positives, ranking metrics, a report.

The split is per user by time (each user's latest interactions are the test), so a model is judged
on predicting what a user did next from what they did before, as in serving. Test items the model
never saw in training stay in the test set and count as misses: cold-start items are part of the
honest score. Metrics are computed for two uses of a recommender:

* candidate generation — Recall@100/500/1000: does the right item make the long list at all?
* final ranking — NDCG@10, Recall@20 and catalog coverage@20: is it near the top, and is the
  model recommending more than the same few hits to everyone?
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.errors import InvalidInputError
from recsys.stores.lake import Lake
from training.peers import CatalogTooLargeError
from training.recommender import Recommender

POSITIVE_COLUMNS = ["user_id", "item_id", "event_time"]
SUMMARY_COLUMNS = ["recall@100", "recall@500", "recall@1000", "ndcg@10", "recall@20", "coverage@20"]


# -- data ------------------------------------------------------------------------------------------
def positives(table: pa.Table | pd.DataFrame, exclude_actions: Collection[str] = ("skip",),
              min_rating: float | None = None) -> pd.DataFrame:
    """Implicit positives from lake interactions: one row per (user, item) at its first event.

    Every action but ``skip`` says the user wanted the item. ``min_rating`` optionally also drops
    ``rate`` events below a threshold; by default every rating counts, as MovieLens-style implicit
    benchmarks do (having watched a film is the signal, not liking it).
    """
    frame = table.to_pandas() if isinstance(table, pa.Table) else table.copy()
    keep = ~frame["action_type"].isin(list(exclude_actions))
    if min_rating is not None:
        keep &= ~((frame["action_type"] == "rate") & (frame["value"] < min_rating))
    frame = frame.loc[keep, POSITIVE_COLUMNS].astype({"user_id": str, "item_id": str})
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame = frame.sort_values(["user_id", "event_time", "item_id"], kind="stable")
    return frame.drop_duplicates(["user_id", "item_id"], keep="first").reset_index(drop=True)


def temporal_split(frame: pd.DataFrame, test_fraction: float = 0.2,
                   min_train: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user, their latest ``test_fraction`` of interactions (at least one) become the test set.

    Users with at most ``min_train`` interactions stay entirely in train. Test rows whose item the
    user already has in train are dropped (re-consumption is not a recommendation); test items that
    no one has in train are kept and count as misses.
    """
    if not 0 < test_fraction < 1:
        raise InvalidInputError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    ordered = frame.sort_values(["user_id", "event_time", "item_id"], kind="stable").reset_index(drop=True)
    groups = ordered.groupby("user_id", sort=False)
    size = groups["item_id"].transform("size").to_numpy()
    position = groups.cumcount().to_numpy()
    n_test = np.where(size > min_train, np.maximum(1, np.floor(size * test_fraction)), 0)
    n_test = np.minimum(n_test, np.maximum(size - min_train, 0))
    is_test = position >= size - n_test
    train, test = ordered[~is_test], ordered[is_test]
    seen = pd.MultiIndex.from_frame(train[["user_id", "item_id"]])
    fresh = ~pd.MultiIndex.from_frame(test[["user_id", "item_id"]]).isin(seen)
    test = test[fresh].drop_duplicates(["user_id", "item_id"])
    return train.reset_index(drop=True), test.reset_index(drop=True)


# -- metrics ---------------------------------------------------------------------------------------
def hit_matrix(recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]],
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows follow ``relevant``'s users: (hits[user, rank] for the first k ranks, |relevant| per user)."""
    users = list(relevant)
    hits = np.zeros((len(users), k), dtype=bool)
    for row, user in enumerate(users):
        ranked = list(recommended.get(user, ()))[:k]
        hits[row, : len(ranked)] = np.isin(np.asarray(ranked, dtype=object), list(relevant[user]))
    sizes = np.array([len(relevant[u]) for u in users], dtype=np.float64)
    return hits, sizes


def _recall(hits: np.ndarray, sizes: np.ndarray, k: int, capped: bool = False) -> float:
    if len(sizes) == 0:
        return float("nan")
    denominator = np.minimum(sizes, k) if capped else sizes
    return float(np.mean(hits[:, :k].sum(axis=1) / denominator))


def _ndcg(hits: np.ndarray, sizes: np.ndarray, k: int) -> float:
    if len(sizes) == 0:
        return float("nan")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(sizes, k).astype(int) - 1]
    return float(np.mean(dcg / ideal))


def recall_at_k(recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]], k: int,
                capped: bool = False) -> float:
    """Mean over users of hits in the top k / |relevant| (the standard definition).

    With ``capped=True`` the denominator is min(|relevant|, k), so a perfect list scores 1.0 even
    when a user has more test items than k (the "recall" of RecSys-challenge papers).
    """
    hits, sizes = hit_matrix(recommended, relevant, k)
    return _recall(hits, sizes, k, capped)


def ndcg_at_k(recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]], k: int) -> float:
    """Mean over users of DCG@k / ideal DCG@k with binary relevance (gain 1 / log2(rank + 1))."""
    hits, sizes = hit_matrix(recommended, relevant, k)
    return _ndcg(hits, sizes, k)


def catalog_coverage(recommended: Mapping[str, Sequence[str]], k: int, train_items: int) -> float:
    """Distinct items in anyone's top k / items in the training set."""
    distinct = {item for ranked in recommended.values() for item in list(ranked)[:k]}
    return len(distinct) / train_items if train_items else float("nan")


# -- harness ---------------------------------------------------------------------------------------
def evaluate(recommenders: Sequence[Recommender], train: pd.DataFrame, test: pd.DataFrame,
             candidate_ks: Sequence[int] = (100, 500, 1000), final_k: Sequence[int] = (10, 20),
             users_sample: int | None = None, seed: int = 0,
             log: Callable[[str], None] = print) -> pd.DataFrame:
    """One row per recommender: recall (standard and capped) at every k, NDCG and coverage at the
    final ks, and fit / recommend seconds. Users evaluated: every user with test items, or a seeded
    sample of ``users_sample`` of them."""
    relevant = {u: set(items) for u, items in test.groupby("user_id", sort=True)["item_id"]}
    users = sorted(relevant)
    if users_sample is not None and users_sample < len(users):
        users = sorted(np.random.default_rng(seed).choice(users, size=users_sample, replace=False).tolist())
        relevant = {u: relevant[u] for u in users}
    if not users:
        raise InvalidInputError("the test set has no users; the split left nothing to evaluate")
    ks = sorted(set(candidate_ks) | set(final_k))
    train_items = train["item_id"].nunique()
    rows = []
    for model in recommenders:
        row: dict[str, object] = {"recommender": model.name, "users": len(users)}
        started = time.perf_counter()
        try:
            model.fit(train)
        except CatalogTooLargeError as error:
            log(f"{model.name}: skipped — {error.message}")
            rows.append({**row, "note": error.message})
            continue
        row["fit_s"] = time.perf_counter() - started
        started = time.perf_counter()
        recommended = model.recommend(users, max(ks))
        row["recommend_s"] = time.perf_counter() - started
        log(f"{model.name}: fit {row['fit_s']:.1f}s, recommend {len(users):,} users × {max(ks)} "
            f"in {row['recommend_s']:.1f}s")
        hits, sizes = hit_matrix(recommended, relevant, max(ks))
        row.update({f"recall@{k}": _recall(hits, sizes, k) for k in ks})
        row.update({f"capped_recall@{k}": _recall(hits, sizes, k, capped=True) for k in ks})
        row.update({f"ndcg@{k}": _ndcg(hits, sizes, k) for k in final_k})
        row.update({f"coverage@{k}": catalog_coverage(recommended, k, train_items) for k in final_k})
        rows.append(row)
    return pd.DataFrame(rows)


# -- report ----------------------------------------------------------------------------------------
ModelFactory = Callable[[int], Sequence[Recommender]]


def split_for(table: pa.Table | pd.DataFrame, validation: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test split (train, test), or with ``validation`` the same split of the training part (tuning
    never touches the test)."""
    train, test = temporal_split(positives(table))
    return temporal_split(train) if validation else (train, test)


def run_evaluation(lake_root: Path, out_dir: Path, models: ModelFactory, seeds: Sequence[int] = (0,),
                   users_sample: int | None = None, validation: bool = False,
                   params: Mapping[str, object] | None = None) -> pd.DataFrame:
    """Evaluate ``models(seed)`` for every seed on the lake; write evaluation.json/.csv/.png to ``out_dir``.

    A model with ``deterministic = True`` gives the same lists whatever the seed and runs for the first
    seed only. Returns the summary: per recommender, each metric's mean and (``<metric>_std``) its
    standard deviation over the seeds it ran. With ``validation``, the test set is never touched."""
    table = Lake(lake_root).interactions(columns=["user_id", "item_id", "event_time", "action_type", "value"])
    if table.num_rows == 0:
        raise InvalidInputError(f"the lake at {lake_root} has no interactions; import data first")
    train, test = split_for(table, validation)
    which = "validation split of the training part; " if validation else ""
    print(f"{which}positives: {len(train):,} train, {len(test):,} test rows; {train['user_id'].nunique():,} users, "
          f"{train['item_id'].nunique():,} items in train (the universe every model recommends from)")
    runs = []
    for number, seed in enumerate(seeds):
        chosen = [m for m in models(seed) if number == 0 or not getattr(m, "deterministic", False)]
        print(f"seed {seed}: {', '.join(m.name for m in chosen)}")
        runs.append(evaluate(chosen, train, test, users_sample=users_sample, seed=0).assign(seed=seed))
    raw = pd.concat(runs, ignore_index=True)
    results = summarize(raw)
    _print_table(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw.to_csv(out_dir / "evaluation_runs.csv", index=False)
    results.to_csv(out_dir / "evaluation.csv", index=False)
    meta = {"lake": str(lake_root), "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seeds": list(seeds), "params": dict(params or {}),
            "split": {"kind": "temporal per user", "test_fraction": 0.2, "min_train": 1,
                      "validation": validation},
            "universe": "items in the training part", "train_rows": len(train), "test_rows": len(test),
            "users_sample": users_sample, "results": json.loads(results.to_json(orient="records"))}
    (out_dir / "evaluation.json").write_text(json.dumps(meta, indent=2) + "\n")
    _plot(results, out_dir / "evaluation.png")
    print(f"wrote {out_dir / 'evaluation.json'}, evaluation.csv, evaluation_runs.csv and evaluation.png")
    return results


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per recommender (in first-seen order): mean of every numeric column over its seeds, ``<col>_std``
    (population standard deviation, 0 for one run) and ``seeds`` (how many runs)."""
    metrics = [c for c in runs.columns if c not in ("recommender", "seed", "note")
               and pd.api.types.is_numeric_dtype(runs[c])]
    grouped = runs.groupby("recommender", sort=False)
    summary = grouped[metrics].mean()
    spread = grouped[metrics].std(ddof=0).fillna(0.0).add_suffix("_std")
    out = pd.concat([summary, spread], axis=1).assign(seeds=grouped.size()).reset_index()
    if "note" in runs:
        out["note"] = grouped["note"].first().to_numpy()
    return out


def beats(results: pd.DataFrame, ours: str, peer: str, metric: str) -> bool:
    """A claimed win: ours' mean exceeds the peer's by more than twice the larger standard deviation."""
    mine, theirs = (results.set_index("recommender").loc[name] for name in (ours, peer))
    margin = 2 * max(float(mine.get(f"{metric}_std", 0.0)), float(theirs.get(f"{metric}_std", 0.0)))
    return float(mine[metric]) - float(theirs[metric]) > margin


def _print_table(results: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = [c for c in [*SUMMARY_COLUMNS, "fit_s", "recommend_s"] if c in results.columns]
    table = Table(title="offline evaluation (temporal split, last 20% per user; mean ± std over seeds)")
    table.add_column("recommender")
    table.add_column("seeds", justify="right")
    for column in shown:
        table.add_column(column, justify="right")
    for _, row in results.iterrows():
        table.add_row(str(row["recommender"]), str(int(row.get("seeds", 1))), *(_cell(row, c) for c in shown))
    Console(width=max(Console().width, 130)).print(table)


def _cell(row: pd.Series, column: str) -> str:
    if pd.isna(row[column]):
        return "—"
    if "@" not in column:
        return f"{row[column]:.1f}"
    spread = row.get(f"{column}_std", 0.0)
    return f"{row[column]:.4f}" + (f" ± {spread:.4f}" if spread and not pd.isna(spread) else "")


def _plot(results: pd.DataFrame, path: Path) -> None:
    """Recall@k against k (log scale), one line per recommender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(int(c.split("@")[1]) for c in results.columns if c.startswith("recall@") and c[7:].isdigit())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in results.iterrows():
        if not pd.isna(row.get(f"recall@{ks[0]}")):
            ax.plot(ks, [row[f"recall@{k}"] for k in ks], marker="o", label=row["recommender"])
    ax.set(xscale="log", xlabel="k (list length)", ylabel="Recall@k", title="Recall@k per recommender")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
