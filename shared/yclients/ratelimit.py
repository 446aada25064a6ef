"""One rate limit for the whole fleet, shared through Redis: YClients counts requests per IP, not per process.

The minute is a moving window (the `limits` library's Redis strategy): no minute ever holds more requests than
allowed, across every worker process and host on the same Redis. The second is kept by spacing instead: each
request reserves its own send time at least 1/(per_second - 1) s after the one before, fleet-wide (one Lua
step on Redis' clock). A moving window of a second lets a whole second's requests leave at once and the next
second's at once a second later, so any delay of the first burst on its way (a busy host, a descheduled
process) puts more than the limit into one second as the API counts them; spaced requests must each be held
back a quarter of a second before two could share a slot.
"""

from __future__ import annotations

import time

import redis
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

# Reserve the next send slot: the later of now and the slot after the last reservation; the key then holds the
# slot after this one. Returns how many milliseconds the caller waits for its slot. KEYS[1]: the next free
# slot (ms on Redis' clock); ARGV[1]: the spacing in ms. The key lives no longer than the spacing past its slot.
RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local spacing = tonumber(ARGV[1])
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
redis.call('SET', KEYS[1], slot + spacing, 'PX', slot + spacing - now + spacing)
return slot - now
"""


class FleetRateLimiter:
    def __init__(self, redis_url: str, per_second: int, per_minute: int, key: str = "yclients") -> None:
        self._limiter = MovingWindowRateLimiter(RedisStorage(redis_url, key_prefix="fleet-ratelimit"))
        # Headroom: a request leaves a little after its slot is taken, so a window counted at the API can hold
        # one more than the same window counted here (spacing by 1/(n-1) puts at most n sends in a closed second).
        self._spacing_ms = max(int(1000 / max(per_second - 1, 1)), 1)
        self._per_minute = RateLimitItemPerMinute(max(per_minute - 2, 1))
        self._key = key
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self._pause_key = f"fleet-ratelimit:{key}:pause"
        self._next_key = f"fleet-ratelimit:{key}:next-send"
        self._reserve = self._redis.register_script(RESERVE)

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
        item = self._per_minute
        while not self._limiter.hit(item, self._key):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"rate limit {item} not available within {timeout:.0f} s")
            reset_at = self._limiter.get_window_stats(item, self._key).reset_time
            time.sleep(min(max(reset_at - time.time(), 0.02), 1.0))
        wait_ms = int(self._reserve(keys=[self._next_key], args=[self._spacing_ms]))
        if wait_ms > 0:
            time.sleep(wait_ms / 1000)
        return time.monotonic() - started
