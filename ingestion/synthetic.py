"""Synthetic data for scale work, written in the generic import format.

Items have a category, a subcategory and tags, and a power-law (Zipf) popularity. Each user has a
latent taste, a sparse Dirichlet mix over categories, kept as ground truth beside the data, and an
activity level. Users browse in sessions; every event starts as a view that may turn into a click,
a purchase and a rating (higher for categories the user likes). Deterministic by seed, written in
blocks of users so memory stays bounded whatever the size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.progress import progress

EPOCH = pd.Timestamp("2026-01-01", tz="UTC")
#: Funnel probabilities: view -> click -> purchase -> rate.
P_CLICK, P_PURCHASE, P_RATE = 0.3, 0.1, 0.5
EVENTS_PER_VIEW = 1 + P_CLICK * (1 + P_PURCHASE * (1 + P_RATE))


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 10_000
    items: int = 5_000
    interactions: int = 1_000_000
    days: int = 90
    seed: int = 7
    categories: int = 20
    subcategories: int = 5
    tag_vocabulary: int = 300
    zipf_exponent: float = 1.1
    taste_concentration: float = 0.3
    explore_rate: float = 0.15
    mean_session_views: float = 6.0
    users_per_block: int = 20_000
    start: pd.Timestamp = EPOCH  # the first day of events; items were created in the year before it


def generate(config: SyntheticConfig, out_dir: Path, show_progress: bool = True) -> int:
    """Write items, users, interactions and ground truth under ``out_dir``; return the event count."""
    rng = np.random.default_rng(config.seed)
    out_dir = Path(out_dir)
    (out_dir / "interactions").mkdir(parents=True, exist_ok=True)
    (out_dir / "ground_truth").mkdir(exist_ok=True)
    catalog = _items(config, rng)
    catalog.frame.to_parquet(out_dir / "items.parquet", index=False)
    tastes = rng.dirichlet(np.full(config.categories, config.taste_concentration), size=config.users)
    activity = rng.lognormal(0.0, 1.0, size=config.users)
    views = rng.multinomial(int(np.ceil(config.interactions / EVENTS_PER_VIEW * 1.02)), activity / activity.sum())
    _users(config, tastes, activity).to_parquet(out_dir / "ground_truth" / "user_tastes.parquet", index=False)
    pd.DataFrame({"user_id": _ids("u", np.arange(config.users))}).to_parquet(out_dir / "users.parquet", index=False)

    written = 0
    with progress("generating interactions", config.interactions, show_progress) as advance:
        for block, start in enumerate(range(0, config.users, config.users_per_block)):
            if written >= config.interactions:
                break
            users = np.arange(start, min(start + config.users_per_block, config.users))
            events = _block_events(config, rng, catalog, tastes, users, views[users])
            events = events.iloc[: config.interactions - written]
            pq.write_table(pa.Table.from_pandas(events, preserve_index=False),
                           out_dir / "interactions" / f"part-{block:05d}.parquet", compression="zstd")
            written += len(events)
            advance(len(events))
    return written


@dataclass(frozen=True)
class _Catalog:
    frame: pd.DataFrame
    category: np.ndarray
    by_category: list[np.ndarray]  # item indexes of each category
    cumulative: list[np.ndarray]  # cumulative popularity within each category
    global_cumulative: np.ndarray


def _items(config: SyntheticConfig, rng: np.random.Generator) -> _Catalog:
    n = config.items
    popularity = 1.0 / np.arange(1, n + 1) ** config.zipf_exponent
    popularity = popularity[rng.permutation(n)]
    category_size = 1.0 / np.arange(1, config.categories + 1) ** 0.5
    category = rng.choice(config.categories, size=n, p=category_size / category_size.sum())
    subcategory = rng.integers(0, config.subcategories, size=n)
    tag_ids = rng.integers(0, config.tag_vocabulary, size=(n, 3))
    frame = pd.DataFrame({
        "item_id": _ids("i", np.arange(n)),
        "title": [f"Item {i}" for i in range(n)],
        "category": _ids("c", category),
        "subcategory": [f"c{c}-s{s}" for c, s in zip(category, subcategory)],
        "tags": ["|".join(f"t{t}" for t in sorted(set(row))) for row in tag_ids],
        "created_at": config.start - pd.to_timedelta(rng.integers(0, 365 * 86400, size=n), unit="s"),
    })
    by_category = [np.flatnonzero(category == c) for c in range(config.categories)]
    cumulative = [np.cumsum(popularity[idx]) / popularity[idx].sum() if len(idx) else np.array([1.0])
                  for idx in by_category]
    return _Catalog(frame, category, by_category, cumulative, np.cumsum(popularity) / popularity.sum())


def _users(config: SyntheticConfig, tastes: np.ndarray, activity: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": _ids("u", np.arange(config.users)),
        "activity": activity,
        "taste": list(tastes.astype("float32")),
        "favourite_category": _ids("c", tastes.argmax(axis=1)),
    })


def _block_events(
    config: SyntheticConfig, rng: np.random.Generator, catalog: _Catalog,
    tastes: np.ndarray, users: np.ndarray, views: np.ndarray,
) -> pd.DataFrame:
    user = np.repeat(users, views)
    n = len(user)
    # Sessions: each view falls in one of the user's sessions, which start at random moments.
    sessions = np.maximum(1, np.ceil(views / config.mean_session_views)).astype(np.int64)
    session_base = np.concatenate([[0], np.cumsum(sessions)[:-1]])
    local = rng.integers(0, np.repeat(sessions, views))
    session = np.repeat(session_base, views) + local
    starts = rng.uniform(0, config.days * 86400, size=int(sessions.sum()))
    order = np.argsort(session, kind="stable")
    user, session = user[order], session[order]
    first = np.searchsorted(session, session, side="left")
    offset = np.cumsum(rng.exponential(60.0, size=n))
    seconds = starts[session] + offset - offset[first]
    item = _pick_items(config, rng, catalog, tastes, user)
    views_frame = pd.DataFrame({"u": user, "i": item, "s": session + int(users[0]) * 1_000_000, "t": seconds})
    frames = [views_frame.assign(action="view", value=np.nan)]
    clicked = views_frame[rng.random(n) < P_CLICK].assign(t=lambda f: f["t"] + 5)
    frames.append(clicked.assign(action="click", value=np.nan))
    bought = clicked[rng.random(len(clicked)) < P_PURCHASE].assign(t=lambda f: f["t"] + 30)
    frames.append(bought.assign(action="purchase", value=np.nan))
    rated = bought[rng.random(len(bought)) < P_RATE].assign(t=lambda f: f["t"] + 3600)
    liking = tastes[rated["u"].to_numpy(), catalog.category[rated["i"].to_numpy()]] * config.categories
    stars = np.clip(np.round(2.5 + np.log1p(liking) + rng.normal(0, 0.7, len(rated))), 1, 5)
    frames.append(rated.assign(action="rate", value=stars))
    events = pd.concat(frames, ignore_index=True).sort_values(["t", "u"], kind="stable", ignore_index=True)
    return pd.DataFrame({
        "event_id": [f"syn{config.seed}-{users[0]}-{k}" for k in range(len(events))],
        "user_id": _ids("u", events["u"].to_numpy()),
        "item_id": _ids("i", events["i"].to_numpy()),
        "timestamp": config.start + pd.to_timedelta(events["t"].to_numpy(), unit="s").round("ms"),
        "action_type": events["action"].to_numpy(),
        "value": events["value"].to_numpy(),
        "session_id": _ids("s", events["s"].to_numpy()),
    })


def _pick_items(
    config: SyntheticConfig, rng: np.random.Generator, catalog: _Catalog, tastes: np.ndarray, user: np.ndarray
) -> np.ndarray:
    """Mostly a category from the user's taste, then an item by popularity within it; sometimes any popular item."""
    n = len(user)
    cumulative_taste = np.cumsum(tastes[user], axis=1)
    category = (rng.random((n, 1)) > cumulative_taste).sum(axis=1).clip(0, config.categories - 1)
    item = np.empty(n, dtype=np.int64)
    draws = rng.random(n)
    for c in range(config.categories):
        mask = category == c
        if mask.any() and len(catalog.by_category[c]):
            item[mask] = catalog.by_category[c][np.searchsorted(catalog.cumulative[c], draws[mask]).clip(
                0, len(catalog.by_category[c]) - 1)]
        elif mask.any():
            item[mask] = np.searchsorted(catalog.global_cumulative, draws[mask])
    explore = rng.random(n) < config.explore_rate
    item[explore] = np.searchsorted(catalog.global_cumulative, rng.random(int(explore.sum()))).clip(0, config.items - 1)
    return item


def _ids(prefix: str, numbers: np.ndarray) -> np.ndarray:
    return np.char.add(prefix, numbers.astype(str)).astype(object)
