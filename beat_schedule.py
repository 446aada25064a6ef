"""The fleet's periodic jobs: one readable table (crontab times are Europe/Moscow, the app's timezone).

Every entry carries `expires`, so a backlog after an outage runs each job once instead of piling up, and
every job is idempotent, so a run that does happen twice is harmless. Exactly one beat process runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from shared.settings import Settings


def build_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    heartbeat = timedelta(seconds=settings.heartbeat_seconds)
    return {
        # beat -> Redis -> maintenance worker -> PostgreSQL, end to end; its row's age is the fleet's pulse.
        "health-heartbeat": {
            "task": "workers.health.heartbeat",
            "schedule": heartbeat,
            "options": {"expires": heartbeat.total_seconds()},
        },
        # Chats whose drain was lost and replies still pending are driven again.
        "inbound-sweep": {
            "task": "workers.inbound.sweep",
            "schedule": crontab(minute="*"),
            "options": {"expires": 50},
        },
    }
