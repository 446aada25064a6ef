"""Tasks of the WhatsApp key maintenance worker type: prune the key store, watch session health."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.core.settings import get_settings
from shared.core.topology import TaskName
from shared.whatsapp.cleanup import cleanup_keys
from shared.whatsapp.health import check_sessions
from workers.app import app
from workers.periodic import once_per_period
from workers.ping import define_ping, define_report

ping = define_ping(TaskName.KEYS_PING)
report_process = define_report(TaskName.KEYS_REPORT)
BUDGET_MARGIN_SECONDS = 30


@app.task(name=TaskName.KEYS_CLEANUP.value, bind=True)
def cleanup(self: Task, dry_run: bool = False) -> dict[str, Any]:
    """Delete what the policy allows, stopping well before the soft time limit; the next run continues. Once a
    day (workers/periodic.py): a second message for a day already cleaned is skipped; a dry run changes nothing
    and is never guarded."""
    settings = get_settings()
    budget = settings.keys.time_budget_seconds or max(settings.workers.keys.soft_time_limit - BUDGET_MARGIN_SECONDS, 10)

    def work() -> dict[str, Any]:
        report = cleanup_keys(settings.keys, dry_run=dry_run, time_budget=budget)
        return {"run_id": report.run_id, "status": report.status, "deleted": dict(report.deleted)}

    return work() if dry_run else once_per_period(self, work)


@app.task(name=TaskName.CHECK_SESSIONS.value)
def check_sessions_task() -> dict[str, str]:
    """Store every company's session health; alert once per change of status."""
    return {health.company_id: health.status for health in check_sessions(get_settings().keys)}
