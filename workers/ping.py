"""A ping task for each worker type: proves the queue is consumed and the worker reaches PostgreSQL."""

from __future__ import annotations

import gc
from typing import Any

from celery import Task

from shared.core.pool import get_pool
from shared.core.probe import database_round_trip
from shared.core.settings import get_settings
from shared.core.topology import TaskName
from workers.app import app


def define_ping(name: TaskName) -> Task:
    @app.task(name=name.value, ignore_result=False, acks_late=False)
    def ping(hold_seconds: float = 0.0) -> dict[str, Any]:
        """Answer through this child's pool; `hold_seconds` keeps the connection busy for load checks."""
        answer = database_round_trip(get_pool(), hold_seconds)
        worker_type = get_settings().worker_type
        answer["worker_type"] = worker_type.value if worker_type else None
        # Objects inherited from the main process and left out of this child's collections, against those the
        # collector still walks (workers/signals.py, before the pool forks).
        answer["gc"] = {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}
        return answer

    return ping


def define_report(name: TaskName) -> Task:
    @app.task(name=name.value)
    def report_process() -> dict[str, Any]:
        """Publish this child's pool health and query metrics to Redis, where the health service reads them."""
        from shared.core.redis_clients import process_redis
        from shared.health.process_stats import publish

        settings = get_settings()
        role = settings.worker_type.value if settings.worker_type else "worker"
        client = process_redis(settings.redis_url.get_secret_value())
        get_pool()  # a child that has run nothing yet still reports its (idle) pool
        return publish(client, role, settings.health.pool_report_ttl_seconds, force=True) or {}

    return report_process
