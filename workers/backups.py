"""Tasks of the backups worker type: the nightly backup (then pruning) and the weekly restore drill."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from zoneinfo import ZoneInfo

from celery import Task

from shared.alerts.delivery import deliver_quietly, raise_alert
from shared.backups.engine import take_backup
from shared.backups.restore import drill
from shared.backups.retention import prune
from shared.backups.tools import BackupError
from shared.core.settings import get_settings
from shared.core.topology import TaskName
from workers.app import app
from workers.periodic import once_per_period
from workers.ping import define_ping, define_report

ping = define_ping(TaskName.BACKUPS_PING)
report_process = define_report(TaskName.BACKUPS_REPORT)


@app.task(name=TaskName.BACKUP.value, bind=True)
def backup(self: Task) -> dict[str, Any]:
    """Back up, verify, copy off-site; prune only now that a new verified backup exists. Failures raise. Once a
    night (workers/periodic.py): a second message for a night already backed up is skipped, so a second backup's
    pruning never removes the first."""
    settings = get_settings()

    def work() -> dict[str, Any]:
        with alert_on_failure(self, "backup", "🔴 nightly backup failed"):
            result = take_backup(settings.backup, settings.session_conninfo)
            pruned = prune(settings.backup, ZoneInfo(settings.timezone))
        return {"backup_id": result.id, "size_bytes": result.size_bytes, "pruned": pruned}

    return once_per_period(self, work)


@app.task(name=TaskName.RESTORE_DRILL.value, bind=True)
def drill_task(self: Task) -> dict[str, Any]:
    """Restore the newest verified backup into a scratch database and compare; a failed drill raises. Once a
    week (workers/periodic.py): a second message for a week already drilled is skipped."""
    settings = get_settings()

    def work() -> dict[str, Any]:
        with alert_on_failure(self, "drill", "🔴 restore drill failed"):
            result = drill(settings.backup, settings.session_conninfo)
            if not result.passed:
                raise BackupError(result.render())
        return {"backup_id": result.backup_id, "passed": True}

    return once_per_period(self, work)


@contextmanager
def alert_on_failure(task: Task, kind: str, headline: str) -> Iterator[None]:
    """A failure is raised as before (Sentry has it) and told to the operators' chat, once per task run."""
    try:
        yield
    except Exception as exc:
        raise_alert(f"{kind}:{task.request.id}", kind, f"{headline}\n{type(exc).__name__}: {str(exc)[:1000]}")
        deliver_quietly()
        raise
