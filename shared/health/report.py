"""The whole fleet's health: every check, an overall status, stored with its time, alerting once per change."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis
import sentry_sdk
from psycopg.types.json import Jsonb

from shared.db import run, transaction
from shared.health import checks
from shared.health.checks import Component, safely, worst
from shared.redis_clients import process_redis
from shared.settings import Settings

log = logging.getLogger(__name__)

CHECK_PREFIX = "fleet:"


def redis_client(settings: Settings) -> redis.Redis:
    return process_redis(settings.redis_url.get_secret_value())


def components(settings: Settings, client: redis.Redis) -> dict[str, Component]:
    found = [
        safely("heartbeat", checks.check_heartbeat, settings),
        safely("database", checks.check_database, settings, client),
        safely("queues", checks.check_queues, settings, client),
        safely("whatsapp", checks.check_whatsapp),
        safely("backups", checks.check_backups, settings),
        safely("sync", checks.check_sync, settings),
        safely("outbox", checks.check_outbox, settings),
    ]
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
    for name, part in report["components"].items():
        check_name = CHECK_PREFIX + name
        with transaction():
            previous = run(
                "SELECT status FROM health_checks WHERE check_name = %s ORDER BY checked_at DESC, id DESC LIMIT 1",
                (check_name,),
                table="health_checks",
                operation="select",
            )
            run(
                "INSERT INTO health_checks (check_name, status, details) VALUES (%s, %s, %s)",
                (check_name, part["status"], Jsonb(part, dumps=_dumps)),
                table="health_checks",
                operation="insert",
            )
        before = previous[0]["status"] if previous else None
        if before != part["status"] and not (before is None and part["status"] == "healthy"):
            _alert(name, part["status"], before, part["problems"])
            changed.append(name)
    return changed


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def prune_history(days: int = 30) -> int:
    """Stored results older than a month go; the table would otherwise grow by ~10k rows a day."""
    return len(
        run(
            "DELETE FROM health_checks WHERE checked_at < now() - make_interval(days => %s) RETURNING 1",
            (days,),
            table="health_checks",
            operation="delete",
        )
    )
