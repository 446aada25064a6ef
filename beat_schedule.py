"""The fleet's periodic jobs: one readable table (crontab times are Europe/Moscow, the app's timezone).

Every entry carries `expires`, so a backlog after an outage runs each job once instead of piling up, and
every job is idempotent, so a run that does happen twice is harmless. Exactly one beat process runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from shared.core.settings import Settings

HOUR = 3600


def _sync(entity: str, schedule: crontab, expires: int, mode: str | None = None) -> dict[str, Any]:
    return {
        "task": "workers.yclients.sync_all",
        "schedule": schedule,
        "args": (entity,) if mode is None else (entity, mode),
        "options": {"expires": expires},
    }


def build_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    heartbeat = timedelta(seconds=settings.heartbeat_seconds)
    return {
        # YClients sync for every configured company (the original system's times, which the salons know).
        "yclients-company-weekly": _sync("company", crontab(minute=30, hour=0, day_of_week="mon"), HOUR),
        "yclients-services": _sync("services", crontab(minute=0, hour=1), HOUR),
        "yclients-staff": _sync("staff", crontab(minute=0, hour=2), HOUR),
        "yclients-clients": _sync("clients", crontab(minute=0, hour=3), HOUR),
        "yclients-schedules": _sync("schedules", crontab(minute=0, hour=5), HOUR),
        "yclients-schedules-today": _sync("schedules_today", crontab(minute=0, hour="8-23"), 50 * 60),
        "yclients-records": _sync("records", crontab(minute="*/15"), 10 * 60),
        # A full walk each night catches what incremental runs missed and is the only one that may delete.
        "yclients-records-full": _sync("records", crontab(minute=30, hour=3), HOUR, mode="full"),
        # Chat bookings on their way to YClients and webhooks on their way in: re-driven if their task was lost.
        "yclients-sweep": {
            "task": "workers.yclients.sweep",
            "schedule": timedelta(seconds=30),
            "options": {"expires": 25},
        },
        # Reminders before visits (the evening before and a few hours before), each sent once.
        "inbound-reminders": {
            "task": "workers.inbound.send_reminders",
            "schedule": crontab(minute="*"),
            "options": {"expires": 50},
        },
        # beat -> Redis -> maintenance worker -> PostgreSQL, end to end; its row's age is the fleet's pulse.
        "health-heartbeat": {
            "task": "workers.health.heartbeat",
            "schedule": heartbeat,
            "options": {"expires": heartbeat.total_seconds()},
        },
        # WhatsApp key store: prune by policy at night, watch every session all day.
        "keys-cleanup": {
            "task": "workers.keys.cleanup",
            "schedule": crontab(minute=0, hour=3),
            "options": {"expires": HOUR},
        },
        "keys-session-health": {
            "task": "workers.keys.check_sessions",
            "schedule": crontab(minute="*/15"),
            "options": {"expires": 10 * 60},
        },
        # Backups: nightly (then pruning), and a weekly drill that restores one into a scratch database.
        "backup-nightly": {
            "task": "workers.backups.backup",
            "schedule": crontab(minute=0, hour=4),
            "options": {"expires": 2 * HOUR},
        },
        "backup-restore-drill": {
            "task": "workers.backups.drill",
            "schedule": crontab(minute=0, hour=6, day_of_week="sun"),
            "options": {"expires": 2 * HOUR},
        },
        # The fleet's health report (stored, alerted once per change), fed by every worker type's figures.
        "health-collect": {
            "task": "workers.health.collect",
            "schedule": crontab(minute="*"),
            "options": {"expires": 50},
        },
        **{
            f"health-report-{module}": {
                "task": f"workers.{module}.report_process",
                "schedule": crontab(minute="*"),
                "options": {"expires": 50},
            }
            for module in ("inbound", "yclients", "keys", "backups")
        },
        # Alerts waiting for the operators' Telegram chat (each job also tries right after raising one).
        "alerts-deliver": {
            "task": "workers.health.deliver_alerts",
            "schedule": timedelta(seconds=30),
            "options": {"expires": 25},
        },
        # Retention: old messages, replies, dead letters and sync journals, deleted in small batches at night.
        "retention-nightly": {
            "task": "workers.health.apply_retention",
            "schedule": crontab(minute=30, hour=4),
            "options": {"expires": HOUR},
        },
        # Dead letters parked in Redis (refused broker messages, or written while PostgreSQL was away) filed.
        "dead-letters-file-spool": {
            "task": "workers.health.file_dead_letter_spool",
            "schedule": crontab(minute="*"),
            "options": {"expires": 50},
        },
        # Chats whose drain was lost and replies still pending are driven again.
        "inbound-sweep": {
            "task": "workers.inbound.sweep",
            "schedule": crontab(minute="*"),
            "options": {"expires": 50},
        },
    }
