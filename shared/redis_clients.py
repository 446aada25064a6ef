"""One Redis client per process and URL, made after fork on first use (its sockets never cross a fork)."""

from __future__ import annotations

import os

import redis

_clients: dict[tuple[int, str], redis.Redis] = {}


def process_redis(url: str) -> redis.Redis:
    key = (os.getpid(), url)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url, socket_timeout=5)
    return _clients[key]
