"""The heartbeat: beat -> queue -> worker -> PostgreSQL, end to end; the newest row's age is the fleet's pulse."""

from __future__ import annotations

import os
from datetime import datetime

from psycopg_pool import ConnectionPool

from shared.core.settings import WorkerType
from shared.data.repositories.health_checks import HealthCheckRepository

HEARTBEAT_RETENTION_DAYS = 7


def record_heartbeat(pool: ConnectionPool, worker: str, worker_type: WorkerType | None) -> datetime:
    """Store one heartbeat row (and prune old ones) on one connection of the worker's pool."""
    checks = HealthCheckRepository()
    with pool.connection() as conn:
        checks.prune(HEARTBEAT_RETENTION_DAYS, check_name="heartbeat", conn=conn)
        details = {"pid": os.getpid(), "worker_type": worker_type.value if worker_type else None}
        return checks.record("heartbeat", "healthy", details, subject=worker, conn=conn)
