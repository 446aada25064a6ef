"""The fleet's periodic jobs: one readable table (crontab times are Europe/Moscow, the app's timezone).

Every entry carries `expires`, so a backlog after an outage runs each job once instead of piling up, and
every job is idempotent, so a run that does happen twice is harmless. Exactly one beat process runs. Jobs that
must run once per period (the nightly key cleanup, backup and retention, the weekly drill) take their names and
times from shared/core/periods.py, which their tasks' guard reads too (workers/periodic.py): a second message
for the same period, whatever sent it, is skipped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from shared.core.periods import BACKUP_NIGHTLY, KEYS_CLEANUP, RESTORE_DRILL, RETENTION_NIGHTLY, PeriodicJob
from shared.core.settings import Settings
from shared.core.topology import REPORT_OF_WORKER, TaskName
from shared.yclients.timetable import SYNC_RUNS, SyncRun

HOUR = 3600


def _job(task: TaskName, schedule: crontab | timedelta, expires: float, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """One entry; the name is kept as plain text, as beat stores it in its schedule file."""
    entry: dict[str, Any] = {"task": task.value, "schedule": schedule, "options": {"expires": expires}}
    if args:
        entry["args"] = args
    return entry


def _once(job: PeriodicJob, expires: float) -> dict[str, Any]:
    """A job that runs once per period, at its declared times (shared/core/periods.py)."""
    return _job(job.task, job.schedule, expires)


def _sync(run: SyncRun) -> dict[str, Any]:
    return _job(
        TaskName.SYNC_ALL, run.schedule, run.expires, (run.entity,) if run.mode is None else (run.entity, run.mode)
    )


def build_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    heartbeat = timedelta(seconds=settings.heartbeat_seconds)
    return {
        # YClients sync for every configured company, at the times in shared/yclients/timetable.py (the health
        # report reads them there to tell a late sync).
        **{run.name: _sync(run) for run in SYNC_RUNS},
        # Chat bookings on their way to YClients and webhooks on their way in: re-driven if their task was lost.
        "yclients-sweep": _job(TaskName.YCLIENTS_SWEEP, timedelta(seconds=30), 25),
        # Chat bookings compared with each salon's YClients calendar, and disagreements repaired (hourly).
        "yclients-reconcile": _job(TaskName.RECONCILE_ALL, crontab(minute=20), 50 * 60),
        # Reminders before visits (the evening before and a few hours before), each sent once.
        "inbound-reminders": _job(TaskName.SEND_REMINDERS, crontab(minute="*"), 50),
        # beat -> Redis -> maintenance worker -> PostgreSQL, end to end; its row's age is the fleet's pulse.
        "health-heartbeat": _job(TaskName.HEARTBEAT, heartbeat, heartbeat.total_seconds()),
        # WhatsApp key store: prune by policy at night, watch every session all day.
        KEYS_CLEANUP.name: _once(KEYS_CLEANUP, HOUR),  # 03:00
        "keys-session-health": _job(TaskName.CHECK_SESSIONS, crontab(minute="*/15"), 10 * 60),
        # Backups: nightly (then pruning), and a weekly drill that restores one into a scratch database.
        BACKUP_NIGHTLY.name: _once(BACKUP_NIGHTLY, 2 * HOUR),  # 04:00
        RESTORE_DRILL.name: _once(RESTORE_DRILL, 2 * HOUR),  # Sundays 06:00
        # The fleet's health report (stored, alerted once per change), fed by every worker type's figures.
        "health-collect": _job(TaskName.COLLECT_HEALTH, crontab(minute="*"), 50),
        **{
            f"health-report-{worker_type.value}": _job(report, crontab(minute="*"), 50)
            for worker_type, report in REPORT_OF_WORKER.items()
        },
        # Alerts waiting for the operators' Telegram chat (each job also tries right after raising one).
        "alerts-deliver": _job(TaskName.DELIVER_ALERTS, timedelta(seconds=30), 25),
        # Retention: old messages, replies, dead letters and sync journals, deleted in small batches at night.
        RETENTION_NIGHTLY.name: _once(RETENTION_NIGHTLY, HOUR),  # 04:30
        # Dead letters parked in Redis (refused broker messages, or written while PostgreSQL was away) filed.
        "dead-letters-file-spool": _job(TaskName.FILE_DEAD_LETTER_SPOOL, crontab(minute="*"), 50),
        # Chats whose drain was lost and replies still pending are driven again.
        "inbound-sweep": _job(TaskName.INBOUND_SWEEP, crontab(minute="*"), 50),
    }
