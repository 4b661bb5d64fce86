"""The per-key rate limit: one bucket for every API worker, in Redis (`services`), and what happens without it."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from bento_services.api.auth import ApiKeyGate
from recsys.errors import RateLimitedError
from recsys.settings import ServingSettings, Settings
from recsys.stores.redis_client import fail_fast_client


def serving(key: str, burst: int, lease: int, workers: int) -> ServingSettings:
    return Settings.load().serving.model_copy(update={
        "api_keys": [SecretStr(key)], "rate_limit_per_second": 0.001, "rate_limit_burst": burst,
        "rate_limit_lease": lease, "workers": workers})


def admitted(gates: list[ApiKeyGate], key: str, requests: int) -> int:
    count = 0
    for k in range(requests):
        try:
            gates[k % len(gates)].check(key)
        except RateLimitedError as refused:
            assert refused.retry_after_seconds >= 1
        else:
            count += 1
    return count


def test_workers_share_one_bucket_in_redis(servers: None) -> None:
    """Two workers (two gates) alternate on one key: together they admit the burst once, not twice."""
    client = fail_fast_client(Settings.load().redis, 1.0)
    client.ping()  # Redis must answer: without it the gates would fall back and this would prove nothing
    key = f"shared-{uuid.uuid4().hex}"
    settings = serving(key, burst=30, lease=4, workers=2)
    gates = [ApiKeyGate(settings, shared=client), ApiKeyGate(settings, shared=client)]
    assert admitted(gates, key, 90) == 30
    assert not any(key in name.decode() for name in client.keys("recsys:ratelimit:*")), "the key is stored in clear"


def test_in_process_buckets_are_per_worker() -> None:
    """Without Redis (the local profile) each worker has its own bucket: the reason for the shared one."""
    key = f"local-{uuid.uuid4().hex}"
    settings = serving(key, burst=30, lease=4, workers=2)
    assert admitted([ApiKeyGate(settings), ApiKeyGate(settings)], key, 90) == 60


def test_a_redis_that_does_not_answer_limits_each_worker_to_its_share() -> None:
    client = fail_fast_client(Settings.load().redis.model_copy(update={"port": 1}), 0.2)  # nothing listens on 1
    key = f"down-{uuid.uuid4().hex}"
    settings = serving(key, burst=30, lease=4, workers=2)
    gates = [ApiKeyGate(settings, shared=client), ApiKeyGate(settings, shared=client)]
    assert admitted(gates, key, 90) == 30  # 15 each: rate and burst divided by the workers


@pytest.mark.parametrize("lease", [1, 7])
def test_leases_never_admit_past_the_burst(servers: None, lease: int) -> None:
    client = fail_fast_client(Settings.load().redis, 1.0)
    client.ping()
    key = f"lease-{uuid.uuid4().hex}"
    settings = serving(key, burst=10, lease=lease, workers=3)
    assert admitted([ApiKeyGate(settings, shared=client) for _ in range(3)], key, 40) == 10
