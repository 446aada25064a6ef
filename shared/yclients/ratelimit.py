"""One rate limit for the whole fleet, shared through Redis: YClients counts requests per IP, not per process.

A moving window (the `limits` library's Redis strategy) guarantees that no second and no minute ever holds
more requests than allowed, across every worker process and host on the same Redis.
"""

from __future__ import annotations

import time

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter


class FleetRateLimiter:
    def __init__(self, redis_url: str, per_second: int, per_minute: int, key: str = "yclients") -> None:
        self._limiter = MovingWindowRateLimiter(RedisStorage(redis_url, key_prefix="fleet-ratelimit"))
        # One request of headroom: a request leaves a few milliseconds after its slot is taken, so a window
        # counted at the API can hold one more than the same window counted here.
        self._per_second = RateLimitItemPerSecond(max(per_second - 1, 1))
        self._per_minute = RateLimitItemPerMinute(max(per_minute - 2, 1))
        self._key = key

    def acquire(self, timeout: float = 120.0) -> float:
        """Block until a request may be sent; returns the seconds waited. Minute first: it is the scarcer."""
        started = time.monotonic()
        deadline = started + timeout
        for item in (self._per_minute, self._per_second):
            while not self._limiter.hit(item, self._key):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"rate limit {item} not available within {timeout:.0f} s")
                reset_at = self._limiter.get_window_stats(item, self._key).reset_time
                time.sleep(min(max(reset_at - time.time(), 0.02), 1.0))
        return time.monotonic() - started
