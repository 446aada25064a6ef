"""Each worker process publishes its pool health and query metrics to Redis; monitoring reads them there.

A process's entry expires after a few minutes, so a dead process disappears from the report by itself.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import redis

from shared.core.pool import get_pool, pool_is_open
from shared.observability.pool_health import pool_health
from shared.observability.query_metrics import query_metrics

PREFIX = "fleet:procstats:"
PUBLISH_EVERY = 15.0

_last_published = 0.0


def snapshot(role: str) -> dict[str, Any]:
    """This process's pool and query figures, as plain data."""
    return {
        "role": role,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "at": time.time(),
        "pool": pool_health(get_pool()) if pool_is_open() else None,
        "queries": query_metrics().snapshot(),
    }


def publish(client: redis.Redis, role: str, ttl: int, *, force: bool = False) -> dict[str, Any] | None:
    """Write this process's snapshot, at most every 15 s unless forced."""
    global _last_published
    now = time.monotonic()
    if not force and now - _last_published < PUBLISH_EVERY:
        return None
    _last_published = now
    data = snapshot(role)
    client.setex(f"{PREFIX}{role}:{data['host']}:{data['pid']}", ttl, json.dumps(data, default=str))
    return data


def read_all(client: redis.Redis) -> list[dict[str, Any]]:
    keys = sorted(client.scan_iter(match=f"{PREFIX}*", count=500))
    values = client.mget(keys) if keys else []
    return [json.loads(value) for value in values if value]
