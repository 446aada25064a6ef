"""One rate limit for the whole fleet, shared through Redis: YClients counts requests per IP, not per process.

A moving window (the `limits` library's Redis strategy) guarantees that no second and no minute ever holds
more requests than allowed, across every worker process and host on the same Redis.
"""

from __future__ import annotations

import time

import redis
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
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self._pause_key = f"fleet-ratelimit:{key}:pause"

    def pause(self, seconds: float) -> None:
        """Hold every process's next request for this long: the API asked for it (Retry-After)."""
        milliseconds = max(int(seconds * 1000), 1)
        # Only ever lengthen a pause another process set: SET ... GT keeps the later expiry.
        self._redis.set(self._pause_key, "1", px=milliseconds, nx=True) or self._redis.pexpire(
            self._pause_key, milliseconds, gt=True
        )

    def paused_for(self) -> float:
        remaining = self._redis.pttl(self._pause_key)
        return remaining / 1000 if remaining and remaining > 0 else 0.0

    def acquire(self, timeout: float = 120.0) -> float:
        """Block until a request may be sent; returns the seconds waited. Minute first: it is the scarcer."""
        started = time.monotonic()
        deadline = started + timeout
        while (wait := self.paused_for()) > 0:
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"the API asked the fleet to pause for {wait:.0f} s more")
            time.sleep(min(wait, 1.0))
        for item in (self._per_minute, self._per_second):
            while not self._limiter.hit(item, self._key):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"rate limit {item} not available within {timeout:.0f} s")
                reset_at = self._limiter.get_window_stats(item, self._key).reset_time
                time.sleep(min(max(reset_at - time.time(), 0.02), 1.0))
        return time.monotonic() - started
