"""When each YClients entity is synced (Europe/Moscow, the app's timezone): the one place the times are written.

Beat's table (`beat_schedule.py`) schedules these runs; the health report reads the same times to tell a
late sync from one that is simply not due yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery.schedules import crontab

HOUR = 3600


@dataclass(frozen=True)
class SyncRun:
    """One periodic sync of one entity for every configured company, as beat's entry `name`."""

    name: str
    entity: str
    schedule: crontab
    expires: int  # seconds: a backlog after an outage runs it once instead of piling up
    mode: str | None = None


# The original system's times, which the salons know.
SYNC_RUNS: tuple[SyncRun, ...] = (
    SyncRun("yclients-company-weekly", "company", crontab(minute=30, hour=0, day_of_week="mon"), HOUR),
    SyncRun("yclients-services", "services", crontab(minute=0, hour=1), HOUR),
    SyncRun("yclients-staff", "staff", crontab(minute=0, hour=2), HOUR),
    SyncRun("yclients-clients", "clients", crontab(minute=0, hour=3), HOUR),
    SyncRun("yclients-schedules", "schedules", crontab(minute=0, hour=5), HOUR),
    SyncRun("yclients-schedules-today", "schedules_today", crontab(minute=0, hour="8-23"), 50 * 60),
    SyncRun("yclients-records", "records", crontab(minute="*/15"), 10 * 60),
    # A full walk each night catches what incremental runs missed and is the only one that may delete.
    SyncRun("yclients-records-full", "records", crontab(minute=30, hour=3), HOUR, mode="full"),
)
