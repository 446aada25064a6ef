"""The whole fleet's health: every check, an overall status, stored with its time, alerting once per change."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis
import sentry_sdk

from shared.alerts.delivery import change_text, raise_alert
from shared.core.db import transaction
from shared.core.redis_clients import process_redis
from shared.core.replica import reading
from shared.core.settings import Settings
from shared.data.repositories.health_checks import HealthCheckRepository
from shared.health import checks
from shared.health.checks import Component, safely, worst

log = logging.getLogger(__name__)

CHECK_PREFIX = "fleet:"


def redis_client(settings: Settings) -> redis.Redis:
    return process_redis(settings.redis_url.get_secret_value())


def components(settings: Settings, client: redis.Redis) -> dict[str, Component]:
    # The database part counts connections on the primary itself; the others read tables and tolerate a few
    # seconds of lag, so they read on the replica when there is a usable one.
    found = [safely("database", checks.check_database, settings, client)]
    with reading(settings):
        found += [
            safely("heartbeat", checks.check_heartbeat, settings),
            safely("queues", checks.check_queues, settings, client),
            safely("whatsapp", checks.check_whatsapp),
            safely("backups", checks.check_backups, settings),
            safely("sync", checks.check_sync, settings),
            safely("outbox", checks.check_outbox, settings),
            safely("crm", checks.check_crm, settings),
        ]
    found.append(safely("assistant", checks.check_assistant, settings, client))
    return {component.name: component for component in found}


def build_report(settings: Settings, client: redis.Redis | None = None) -> dict[str, Any]:
    parts = components(settings, client or redis_client(settings))
    return {
        "status": worst([part.status for part in parts.values()]),
        "checked_at": datetime.now(UTC).isoformat(),
        "components": {name: part.as_dict() for name, part in parts.items()},
    }


def _alert(name: str, status: str, previous: str | None, problems: list[str]) -> None:
    recovered = checks.SEVERITY[status] < checks.SEVERITY.get(previous or "healthy", 0)
    level = "info" if recovered else ("error" if status == "unhealthy" else "warning")
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("check", name)
        scope.set_tag("status", status)
        scope.set_extra("problems", problems)
        sentry_sdk.capture_message(
            f"fleet health: {name} {'recovered to' if recovered else 'is'} {status}", level=level
        )


def store_and_alert(report: dict[str, Any]) -> list[str]:
    """Store each component's result; one Sentry event per component whose status changed. Returns those."""
    changed = []
    checks = HealthCheckRepository()
    for name, part in report["components"].items():
        check_name = CHECK_PREFIX + name
        with transaction() as conn:
            previous = checks.latest(check_name)
            checked_at = checks.record(check_name, part["status"], part)
            before = previous["status"] if previous else None
            change = before != part["status"] and not (before is None and part["status"] == "healthy")
            if change:  # the Telegram alert is stored with the change it reports: never twice, never lost
                text = change_text(f"fleet health: {name}", part["status"], before, part["problems"])
                raise_alert(f"health:{name}:{checked_at.isoformat()}", "health", text, conn=conn)
        if change:
            _alert(name, part["status"], before, part["problems"])
            changed.append(name)
    return changed


def prune_history(days: int = 30) -> int:
    """Stored results older than a month go; the table would otherwise grow by ~10k rows a day."""
    return HealthCheckRepository().prune(days)
