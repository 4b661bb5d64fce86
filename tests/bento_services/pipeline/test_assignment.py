"""A/B assignment: stable across processes, bucket ranges honoured, control otherwise."""

from __future__ import annotations

import subprocess
import sys
import zlib

import pytest

from bento_services.pipeline.assignment import CONTROL, assign, bucket_of, forced
from recsys.errors import InvalidInputError
from recsys.settings import ExperimentVariant

EXPERIMENTS = [
    ExperimentVariant(name="exp_div_A", buckets=(0, 10), diversity_boost=0.5),
    ExperimentVariant(name="exp_ranker_B", buckets=(10, 20), ranker_version="r2"),
]


def test_bucket_is_crc32_mod_100_and_the_same_in_another_process() -> None:
    users = [f"u{k}" for k in range(50)]
    assert [bucket_of(u) for u in users] == [zlib.crc32(u.encode()) % 100 for u in users]
    code = "from bento_services.pipeline.assignment import bucket_of; print([bucket_of(f'u{k}') for k in range(50)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert other.stdout.strip() == str([bucket_of(u) for u in users])


def test_variants_own_their_bucket_ranges_and_the_rest_is_control() -> None:
    seen = {assign(f"user-{k}", EXPERIMENTS).name for k in range(2_000)}
    assert seen == {"exp_div_A", "exp_ranker_B", CONTROL}
    for k in range(500):
        arm = assign(f"user-{k}", EXPERIMENTS)
        expected = "exp_div_A" if arm.bucket < 10 else "exp_ranker_B" if arm.bucket < 20 else CONTROL
        assert arm.name == expected
    share = sum(assign(f"user-{k}", EXPERIMENTS).name == "exp_div_A" for k in range(10_000)) / 10_000
    assert 0.08 < share < 0.12


def test_what_a_variant_changes() -> None:
    by_name = {assign(f"user-{k}", EXPERIMENTS).name: assign(f"user-{k}", EXPERIMENTS) for k in range(500)}
    assert by_name["exp_div_A"].changes_ranking and by_name["exp_div_A"].diversity_boost == 0.5
    assert by_name["exp_ranker_B"].changes_ranking and by_name["exp_ranker_B"].ranker_version == "r2"
    control = by_name[CONTROL]
    assert not control.changes_ranking and control.diversity_boost == 0.0 and control.ranker_version is None
    assert assign("anyone", []).name == CONTROL


def test_a_forced_arm_is_named_as_forced_and_keeps_the_users_bucket() -> None:
    user = next(f"user-{k}" for k in range(500) if assign(f"user-{k}", EXPERIMENTS).name == "exp_div_A")
    arm = forced(user, "exp_ranker_B", EXPERIMENTS)
    assert (arm.name, arm.bucket, arm.ranker_version) == ("forced:exp_ranker_B", bucket_of(user), "r2")
    home = forced(user, CONTROL, EXPERIMENTS)
    assert home.name == "forced:control" and not home.changes_ranking  # control's precomputed list applies
    with pytest.raises(InvalidInputError, match="control, exp_div_A, exp_ranker_B"):
        forced(user, "exp_missing", EXPERIMENTS)
