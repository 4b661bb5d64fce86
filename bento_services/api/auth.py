"""API keys (header ``X-API-Key``) and a token-bucket rate limit per key: the gateway's job, done in-process.

Both run on the event loop (no locks needed) and allocate next to nothing per request.

With several API workers each would keep its own buckets and a key would get `workers` times its rate.
`SharedTokenBucket` keeps the bucket in Redis instead (the `services` profile), one for all workers: a
worker leases a few tokens per round trip (`serving.rate_limit_lease`) and spends them locally within
`LEASE_SECONDS`, so most requests cost no Redis call, and a key can overshoot its rate by at most
`workers * lease` tokens. When Redis does not answer, the worker falls back to a local bucket at its share of
the rate (`rate / workers`), logged, rather than refusing or admitting everything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from typing import Any

from recsys.errors import RateLimitedError, RecsysError, UnauthorizedError
from recsys.settings import ServingSettings

API_KEY_HEADER = "X-API-Key"
LEASE_SECONDS = 1.0
RETRY_SECONDS = 1.0  # a Redis that failed is asked again after this long
log = logging.getLogger(__name__)


class ForbiddenError(RecsysError):
    """A valid key this route does not take: an ordinary API key on an admin route (403)."""

    http_status = 403


class TokenBucket:
    """`rate` tokens per second up to `burst`; each request takes one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else math.inf


#: KEYS[1]: the bucket; ARGV: rate per second, burst, tokens wanted, key TTL seconds. Redis' own clock, so that
#: every worker sees one time. Returns {tokens granted, seconds until one is free (a string: Lua numbers are
#: truncated to integers in replies)}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if granted > 0 then return {granted, '0'} end
if rate <= 0 then return {0, 'inf'} end
return {0, tostring((1 - tokens) / rate)}
"""


class SharedTokenBucket:
    """One key's bucket in Redis, shared by every worker; tokens leased `lease` at a time (see the module)."""

    def __init__(self, client: Any, key: bytes, rate: float, burst: int, lease: int, workers: int) -> None:
        self._client, self.rate, self.burst, self.lease = client, rate, burst, max(1, lease)
        self._name = "recsys:ratelimit:" + hashlib.sha256(key).hexdigest()[:24]  # never the key itself
        self._script = client.register_script(_TAKE)
        self._ttl = max(60, math.ceil(burst / rate) * 2) if rate > 0 else 3600
        self._leased, self._leased_at, self._down_until = 0, 0.0, 0.0
        self._local = TokenBucket(rate / max(1, workers), max(1, burst // max(1, workers)))

    def take(self) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        if self._leased > 0 and now - self._leased_at <= LEASE_SECONDS:
            self._leased -= 1
            return 0.0
        if now < self._down_until:
            return self._local.take()
        try:
            granted, wait = self._script(keys=[self._name], args=[self.rate, self.burst, self.lease, self._ttl])
        except Exception as exc:  # noqa: BLE001 - Redis down or slow: this worker's share, locally
            log.warning("shared rate limit unavailable, limiting locally for %.0f s: %r", RETRY_SECONDS, exc)
            self._down_until = now + RETRY_SECONDS
            return self._local.take()
        if int(granted) > 0:
            self._leased, self._leased_at = int(granted) - 1, now
            return 0.0
        self._leased = 0
        return float(wait)


class ApiKeyGate:
    """Checks the key in constant time, then charges that key's bucket.

    The ordinary gate takes `serving.api_keys`; the admin gate (`admin=True`, the admin routes) takes
    `serving.admin_api_keys` alone and answers an ordinary key with 403, anything else unknown with 401.
    """

    def __init__(self, settings: ServingSettings, *, admin: bool = False, shared: Any = None) -> None:
        """`shared`: a Redis client for buckets shared by every worker (`SharedTokenBucket`); None: in-process."""
        ordinary = [key.get_secret_value().encode() for key in settings.api_keys]
        self._keys = [key.get_secret_value().encode() for key in settings.admin_api_keys] if admin else ordinary
        self._refused = [key for key in ordinary if key not in self._keys] if admin else []
        rate, burst = settings.rate_limit_per_second, settings.rate_limit_burst
        self._buckets: dict[bytes, TokenBucket | SharedTokenBucket] = {
            key: TokenBucket(rate, burst) if shared is None else
            SharedTokenBucket(shared, key, rate, burst, settings.rate_limit_lease, settings.workers)
            for key in self._keys}

    def check(self, presented: str | None) -> None:
        if not presented:
            raise UnauthorizedError(f"missing API key: send it in the {API_KEY_HEADER} header")
        candidate = presented.encode()
        key = next((k for k in self._keys if hmac.compare_digest(k, candidate)), None)
        if key is None:
            if any(hmac.compare_digest(k, candidate) for k in self._refused):
                raise ForbiddenError("this route needs an admin key (serving.admin_api_keys) in the "
                                     f"{API_KEY_HEADER} header; an ordinary API key may not change the catalog")
            raise UnauthorizedError(f"invalid API key in the {API_KEY_HEADER} header")
        wait = self._buckets[key].take()
        if wait:
            retry_after = max(1, math.ceil(min(wait, 3600.0)))
            raise RateLimitedError(f"rate limit exceeded for this API key; retry in {retry_after} s",
                                   retry_after_seconds=retry_after)
