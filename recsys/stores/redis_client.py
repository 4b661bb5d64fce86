"""The Redis client the request path uses: bounded waits and no retries, so a stopped Redis is a fast miss."""

from __future__ import annotations

from typing import Any

from recsys.settings import RedisSettings


def fail_fast_client(settings: RedisSettings, timeout_seconds: float) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host=settings.host, port=settings.port, db=settings.db,
                       socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                       retry=Retry(NoBackoff(), 0))  # redis-py retries ~9 s by default when down
