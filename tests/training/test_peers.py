"""One contract, every peer: a checkerboard of two user groups, each liking its own item block.

Group A (8 users) likes items x0..x5, group B (6 users) likes y0..y5; user ``g<u>`` lacks the two
items ``i`` of its block with (u + i) % 3 == 0. So every user has 4 items seen and 2 unseen in its
own block, and the popularity order is known by hand: x1 and x4 (6 users), then x0, x2, x3, x5
(5 users), then y0..y5 (4 users each), ties by id.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from recsys.errors import InvalidInputError
from training.peers import ALS, EASE, CatalogTooLargeError, ItemKNN, Popularity
from training.recommender import Recommender, top_k

POPULAR = ["x1", "x4", "x0", "x2", "x3", "x5", "y0", "y1", "y2", "y3", "y4", "y5"]
GROUPS = {"a": ("x", 8), "b": ("y", 6)}
PEERS: dict[str, Callable[[], Recommender]] = {
    # Two factors, as the data has two blocks; with more factors than the 12 items ALS can memorise
    # each user's row and rank the unseen items of its block no better than chance.
    "popularity": Popularity, "itemknn": ItemKNN, "ease": EASE, "als": lambda: ALS(factors=2),
}
PERSONALISED = ["itemknn", "ease", "als"]


def checkerboard() -> pd.DataFrame:
    rows = [(f"{g}{u}", f"{block}{i}") for g, (block, n_users) in GROUPS.items()
            for u in range(n_users) for i in range(6) if (u + i) % 3]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    frame["event_time"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(frame)), "min")
    return frame


def seen(user: str) -> set[str]:
    frame = checkerboard()
    return set(frame.loc[frame["user_id"] == user, "item_id"])


def unseen_in_block(user: str) -> set[str]:
    block, _ = GROUPS[user[0]]
    return {f"{block}{i}" for i in range(6)} - seen(user)


def fitted(name: str) -> Recommender:
    model = PEERS[name]()
    model.fit(checkerboard())
    return model


USERS = [f"a{u}" for u in range(8)] + [f"b{u}" for u in range(6)]


@pytest.mark.parametrize("name", PERSONALISED)
def test_top_items_come_from_the_users_own_block(name: str) -> None:
    recommended = fitted(name).recommend(USERS, 2)
    for user in USERS:
        assert set(recommended[user]) == unseen_in_block(user), user


@pytest.mark.parametrize("name", PEERS)
def test_k_past_the_catalog_returns_every_unseen_item_once(name: str) -> None:
    recommended = fitted(name).recommend(USERS, 1000)
    for user in USERS:
        assert len(recommended[user]) == len(set(recommended[user])) == 12 - 4
        assert set(recommended[user]) == set(POPULAR) - seen(user)


@pytest.mark.parametrize("name", PEERS)
def test_unknown_users_get_the_most_popular_items(name: str) -> None:
    recommended = fitted(name).recommend(["stranger", "a0"], 5)
    assert recommended["stranger"] == POPULAR[:5]
    assert fitted(name).recommend(["stranger"], 50)["stranger"] == POPULAR


@pytest.mark.parametrize("name", PEERS)
def test_same_data_gives_the_same_lists(name: str) -> None:
    assert fitted(name).recommend(USERS, 10) == fitted(name).recommend(USERS, 10)


@pytest.mark.parametrize("name", PEERS)
def test_k_zero_and_unfitted_and_empty(name: str) -> None:
    assert fitted(name).recommend(["a0", "stranger"], 0) == {"a0": [], "stranger": []}
    with pytest.raises(InvalidInputError, match="not fitted"):
        PEERS[name]().recommend(["a0"], 3)
    with pytest.raises(InvalidInputError, match="empty"):
        PEERS[name]().fit(checkerboard().iloc[:0])


def test_popularity_gives_known_users_the_popular_items_they_lack() -> None:
    # a0 lacks x0 and x3 (u + i divisible by 3).
    assert fitted("popularity").recommend(["a0"], 4)["a0"] == ["x0", "x3", "y0", "y1"]


def test_itemknn_keeps_only_the_top_neighbours() -> None:
    model = ItemKNN(neighbours=2)
    model.fit(checkerboard())
    assert model.similarity is not None
    assert np.diff(model.similarity.indptr).max() == 2
    assert model.similarity.diagonal().sum() == 0


def test_ease_refuses_a_catalog_over_its_limit() -> None:
    with pytest.raises(CatalogTooLargeError, match="max_items is 5"):
        EASE(max_items=5).fit(checkerboard())


def test_weights_reach_als_confidence() -> None:
    frame = checkerboard().assign(weight=2.0)
    model = ALS(factors=2)
    model.fit(frame)
    assert model.data.weights.max() == 2.0 and model.data.binary.max() == 1.0


def test_top_k_is_exact_and_breaks_ties_by_column() -> None:
    scores = np.array([[0.5, 0.9, 0.5, -np.inf, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0]])
    assert [c.tolist() for c in top_k(scores, 3)] == [[1, 0, 2], [0, 1, 2]]
    assert [c.tolist() for c in top_k(scores, 10)] == [[1, 0, 2, 4], [0, 1, 2, 3, 4]]
