"""One contract for every UserVectorStore: SQLite (`local`) and Redis (`services`)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from recsys.backends import open_user_vectors
from recsys.errors import InvalidInputError
from recsys.settings import Settings

WHEN = datetime(2024, 1, 20, tzinfo=UTC)


def test_vectors_round_trip_in_the_design_layout(settings: Settings) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 128)).astype(np.float32)
    users = [f"vec-test-{k}" for k in range(3)]
    with open_user_vectors(settings) as store:
        assert store.put(users, vectors, "v2.3.1", WHEN) == 3
        got = store.get([users[1], "vec-test-nobody", users[0]])
    assert got[1] is None
    assert got[0] is not None and got[2] is not None
    assert np.array_equal(got[0].vector, vectors[1]) and np.array_equal(got[2].vector, vectors[0])
    assert (got[0].version, got[0].updated_at) == ("v2.3.1", WHEN)
    if settings.profile == "services":
        import redis

        raw = redis.Redis(host=settings.redis.host, port=settings.redis.port).hgetall(f"user_embedding:{users[0]}")
        assert set(raw) == {b"vector", b"version", b"updated_at"} and len(raw[b"vector"]) == 128 * 4


def test_rewrites_replace_and_bad_vectors_are_refused(settings: Settings) -> None:
    with open_user_vectors(settings) as store:
        store.put(["vec-test-a"], np.ones((1, 4), np.float32), "v1", WHEN)
        store.put(["vec-test-a"], np.zeros((1, 4), np.float32), "v2", WHEN)
        (found,) = store.get(["vec-test-a"])
        assert found is not None and found.version == "v2" and not found.vector.any()
        with pytest.raises(InvalidInputError, match="one vector per user"):
            store.put(["a", "b"], np.ones((1, 4)), "v", WHEN)
        with pytest.raises(InvalidInputError, match="finite"):
            store.put(["a"], np.array([[np.nan, 1.0]]), "v", WHEN)
