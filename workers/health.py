"""Health jobs, run on the maintenance queue."""

from __future__ import annotations

from celery import Task

from shared.pool import get_pool
from shared.probe import record_heartbeat
from shared.settings import get_settings
from workers.app import app


@app.task(name="workers.health.heartbeat", bind=True)
def heartbeat(self: Task) -> str:
    """beat -> queue -> worker -> PostgreSQL; the stored time is what the health service watches."""
    checked_at = record_heartbeat(get_pool(), self.request.hostname or "unknown", get_settings().worker_type)
    return checked_at.isoformat()
