"""How full this process's pool is, as plain data, with a warning when it runs hot."""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

HIGH_UTILISATION = 80.0


def pool_health(pool: ConnectionPool) -> dict[str, Any]:
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    idle = stats.get("pool_available", 0)
    in_use = max(size - idle, 0)
    waiting = stats.get("requests_waiting", 0)
    utilisation = round(100.0 * in_use / pool.max_size, 1) if pool.max_size else 0.0
    if in_use >= pool.max_size or waiting:
        status = "at capacity"
    elif utilisation > HIGH_UTILISATION:
        status = "high"
    else:
        status = "normal"
    if status != "normal":
        log.warning("pool %s %s: %s of %s in use, %s waiting", pool.name, status, in_use, pool.max_size, waiting)
    return {
        "name": pool.name,
        "size": size,
        "idle": idle,
        "in_use": in_use,
        "waiting": waiting,
        "min": pool.min_size,
        "max": pool.max_size,
        "utilisation_percent": utilisation,
        "status": status,
        "counters": stats,
    }
