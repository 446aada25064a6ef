"""Jobs that must run once per period (a day, an ISO week), and the period a run belongs to: the one place both
beat's table (`beat_schedule.py`, which schedules them) and the guard in their tasks (`workers/periodic.py`,
which runs each at most once per period) read.

A run's period is that of the schedule's tick it belongs to: the latest tick at or before the moment its
message was sent, in the timezone beat's crontabs use (`FLEET_TIMEZONE`). A beat killed and started again, a
second beat or a redelivery sends a message whose moment falls after the same tick, hence the same period; a
run beat makes up after an outage belongs to the tick it missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from celery.schedules import crontab

from shared.core.settings import Settings
from shared.core.topology import QUEUE_OF_WORKER, TaskName, queue_for_task


class Per(StrEnum):
    DAY = "day"  # the tick's local date, e.g. 2026-12-09
    WEEK = "week"  # the tick's ISO week, e.g. 2026-W50


@dataclass(frozen=True, eq=False)  # each job is declared once, below: compared and hashed as itself
class PeriodicJob:
    """One job beat sends once per period: `name` is its beat entry and its `job` in `periodic_runs`."""

    name: str
    task: TaskName
    schedule: crontab
    per: Per

    def __post_init__(self) -> None:
        """A schedule that ticks twice in a period would make its second tick a skipped run: refused here."""
        once_a_day = len(self.schedule.minute) == 1 and len(self.schedule.hour) == 1
        days = len(self.schedule.day_of_week)
        every_month_day = len(self.schedule.day_of_month) == 31 and len(self.schedule.month_of_year) == 12
        if not (once_a_day and every_month_day and days == (7 if self.per is Per.DAY else 1)):
            raise ValueError(f"{self.name}: {self.schedule} does not tick exactly once per {self.per}")

    def latest_tick(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """The schedule's last tick at or before `moment` (aware), in `zone`."""
        local = moment.astimezone(zone)
        (hour,), (minute,) = self.schedule.hour, self.schedule.minute
        for days_back in range(8):
            day = local.date() - timedelta(days=days_back)
            tick = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
            if day.isoweekday() % 7 in self.schedule.day_of_week and tick <= local:
                return tick
        raise AssertionError("a daily or weekly schedule ticks within 8 days")  # pragma: no cover

    def period_at(self, moment: datetime, zone: ZoneInfo) -> str:
        """The period of the tick `moment` belongs to: `2026-12-09` for a daily job, `2026-W50` for a weekly one."""
        return self.period_of_tick(self.latest_tick(moment, zone))

    def period_of_tick(self, tick: datetime) -> str:
        day: date = tick.date()
        if self.per is Per.DAY:
            return day.isoformat()
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"

    def time_limit(self, settings: Settings) -> int:
        """Seconds after which a run still marked running is dead: its worker type's hard limit kills it by then."""
        queue = queue_for_task(self.task.value)
        worker_type = next(wt for wt, its_queue in QUEUE_OF_WORKER.items() if its_queue is queue)
        return settings.workers.of(worker_type).time_limit


# The times (Europe/Moscow by default, the app's timezone) the operators know; beat_schedule.py schedules them.
KEYS_CLEANUP = PeriodicJob("keys-cleanup", TaskName.KEYS_CLEANUP, crontab(minute=0, hour=3), Per.DAY)
BACKUP_NIGHTLY = PeriodicJob("backup-nightly", TaskName.BACKUP, crontab(minute=0, hour=4), Per.DAY)
RETENTION_NIGHTLY = PeriodicJob("retention-nightly", TaskName.APPLY_RETENTION, crontab(minute=30, hour=4), Per.DAY)
RESTORE_DRILL = PeriodicJob(
    "backup-restore-drill", TaskName.RESTORE_DRILL, crontab(minute=0, hour=6, day_of_week="sun"), Per.WEEK
)

ONCE_PER_PERIOD: dict[TaskName, PeriodicJob] = {
    job.task: job for job in (KEYS_CLEANUP, BACKUP_NIGHTLY, RETENTION_NIGHTLY, RESTORE_DRILL)
}
