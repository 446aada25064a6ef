"""Health jobs, run on the maintenance queue: the heartbeat and the fleet's health report."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.alerts.delivery import deliver_due, deliver_quietly
from shared.core.pool import get_pool
from shared.core.settings import get_settings
from shared.core.topology import TaskName
from shared.data.dead_letters import file_spooled
from shared.data.retention import apply_retention
from shared.health.heartbeat import record_heartbeat
from shared.health.report import build_report, prune_history, redis_client, store_and_alert
from workers.app import app
from workers.periodic import once_per_period


@app.task(name=TaskName.HEARTBEAT.value, bind=True)
def heartbeat(self: Task) -> str:
    """beat -> queue -> worker -> PostgreSQL; the stored time is what the health service watches."""
    checked_at = record_heartbeat(get_pool(), self.request.hostname or "unknown", get_settings().worker_type)
    return checked_at.isoformat()


@app.task(name=TaskName.COLLECT_HEALTH.value)
def collect() -> dict[str, Any]:
    """Build the health report, store each part with its time, alert once per change of status."""
    settings = get_settings()
    report = build_report(settings, redis_client(settings))
    changed = store_and_alert(report)
    deliver_quietly()
    prune_history()
    return {"status": report["status"], "changed": changed}


@app.task(name=TaskName.DELIVER_ALERTS.value)
def deliver_alerts() -> dict[str, int]:
    """Send the alerts waiting for the operators' Telegram chat (raised by any job, kept until sent)."""
    outcome = deliver_due()
    return {"sent": outcome.sent, "retried": outcome.retried, "given_up": outcome.given_up}


@app.task(name=TaskName.FILE_DEAD_LETTER_SPOOL.value)
def file_dead_letter_spool() -> int:
    """Move dead letters parked in Redis into the table, where operators and the health report see them."""
    filed = total = file_spooled()
    while filed:
        filed = file_spooled()
        total += filed
    return total


@app.task(name=TaskName.APPLY_RETENTION.value, bind=True)
def apply_retention_task(self: Task) -> dict[str, Any]:
    """Delete messages, replies, dead letters and sync journals past their retention (settings); once a day
    (workers/periodic.py), a second message for the same day is skipped."""
    return once_per_period(self, lambda: apply_retention(get_settings().retention))
