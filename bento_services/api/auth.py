"""API keys (header ``X-API-Key``) and a token-bucket rate limit per key: the gateway's job, done in-process.

Both run on the event loop (no locks needed) and allocate next to nothing per request.
"""

from __future__ import annotations

import hmac
import math
import time

from recsys.errors import RateLimitedError, RecsysError, UnauthorizedError
from recsys.settings import ServingSettings

API_KEY_HEADER = "X-API-Key"


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


class ApiKeyGate:
    """Checks the key in constant time, then charges that key's bucket.

    The ordinary gate takes `serving.api_keys`; the admin gate (`admin=True`, the admin routes) takes
    `serving.admin_api_keys` alone and answers an ordinary key with 403, anything else unknown with 401.
    """

    def __init__(self, settings: ServingSettings, *, admin: bool = False) -> None:
        ordinary = [key.get_secret_value().encode() for key in settings.api_keys]
        self._keys = [key.get_secret_value().encode() for key in settings.admin_api_keys] if admin else ordinary
        self._refused = [key for key in ordinary if key not in self._keys] if admin else []
        self._buckets = {key: TokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst)
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
