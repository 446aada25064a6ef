"""One Redis client per process and URL, made after fork on first use (its sockets never cross a fork)."""

from __future__ import annotations

import redis

from shared.core.resources import resource


def process_redis(url: str) -> redis.Redis:
    return resource(f"redis:{url}", lambda: redis.Redis.from_url(url, socket_timeout=5), redis.Redis.close)
