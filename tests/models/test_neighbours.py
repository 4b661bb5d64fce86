"""Item-to-item neighbours on a checkerboard: two user groups, two item groups, known answers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recsys.errors import InvalidInputError
from recsys.models.neighbours import ItemNeighbours, NeighboursArtifactError

A = [f"a{k}" for k in range(6)]
B = [f"b{k}" for k in range(6)]


def checkerboard() -> pd.DataFrame:
    """Users u0..u9 take most of A, users v0..v9 most of B; nobody crosses over."""
    rows = [(f"u{n}", item) for n in range(10) for k, item in enumerate(A) if (n + k) % 6 != 0]
    rows += [(f"v{n}", item) for n in range(10) for k, item in enumerate(B) if (n + k) % 6 != 0]
    return pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(
        event_time=pd.Timestamp("2024-01-01", tz="UTC"))


@pytest.mark.parametrize("dense_limit", [100, 1])  # EASE, then the cosine fallback for large catalogs
def test_neighbours_stay_within_their_group(dense_limit: int) -> None:
    model = ItemNeighbours.build(checkerboard(), neighbours=4, max_dense_items=dense_limit)
    assert model.meta.method == ("ease" if dense_limit == 100 else "cosine")
    found = model.similar(["a0", "a1"], k=10, exclude={"a0", "a1"})
    assert found and {item for item, _ in found} <= set(A) - {"a0", "a1"}
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert model.weights.getnnz(axis=1).max() <= 4


def test_newer_items_weigh_more() -> None:
    model = ItemNeighbours.build(checkerboard())
    top, _ = model.similar(["a0", "b0"], k=1, exclude={"a0", "b0"}, recency=0.5)[0]
    assert top.startswith("b")  # b0 is the newest


def test_unknown_items_k_and_empty_input() -> None:
    model = ItemNeighbours.build(checkerboard())
    assert model.similar(["nobody-knows"], k=5) == []
    assert model.similar([], k=5) == []
    assert len(model.similar(["a0"], k=1000)) <= len(A) - 1
    with pytest.raises(InvalidInputError):
        ItemNeighbours.build(checkerboard().iloc[:0])


def test_round_trip_and_broken_folders(tmp_path: Path) -> None:
    model = ItemNeighbours.build(checkerboard(), model_version="v1")
    model.save(tmp_path / "nb")
    again = ItemNeighbours.load(tmp_path / "nb")
    assert again.meta == model.meta and again.similar(["a0"], 3) == model.similar(["a0"], 3)
    (tmp_path / "nb" / "item_ids.json").write_text('["a0"]')
    with pytest.raises(NeighboursArtifactError, match="inconsistent"):
        ItemNeighbours.load(tmp_path / "nb")
    (tmp_path / "nb" / "meta.json").unlink()
    with pytest.raises(NeighboursArtifactError, match="lacks meta.json"):
        ItemNeighbours.load(tmp_path / "nb")


def test_both_summing_paths_equal_the_weighted_product(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from recsys.models import neighbours

    model = ItemNeighbours.build(checkerboard(), neighbours=5)
    recent = ["a0", "a3", "b1", "a2"]
    rows = [model.item_ids.index(i) for i in recent]
    pull = np.zeros(len(model.item_ids))
    for age, row in enumerate(reversed(rows)):
        pull[row] += 0.9 ** age
    exact = pull @ model.weights.toarray()
    expected = {model.item_ids[c]: v for c, v in enumerate(exact) if v > 0 and model.item_ids[c] != "a0"}
    for limit in (10_000, 0):  # dense vector, then unique columns (catalogs past the limit)
        monkeypatch.setattr(neighbours, "DENSE_SUM_ITEMS", limit)
        found = dict(model.similar(recent, k=100, exclude={"a0"}, recency=0.9))
        assert found.keys() == expected.keys()
        assert all(abs(found[i] - expected[i]) < 1e-9 for i in found)
