"""Per-company WhatsApp session health, stored with its time, alerting once per change of status."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import sentry_sdk

from shared.alerts.delivery import change_text, deliver_quietly, raise_alert
from shared.core.db import transaction
from shared.core.settings import KeysSettings
from shared.data.repositories.health_checks import HealthCheckRepository
from shared.data.repositories.whatsapp import WhatsAppKeysRepository

log = logging.getLogger(__name__)

CHECK = "whatsapp_session"
SEVERITY = {"healthy": 0, "warning": 1, "unhealthy": 2}


@dataclass
class SessionHealth:
    company_id: str
    status: str
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    previous: str | None = None

    @property
    def changed(self) -> bool:
        return (self.previous is not None and self.previous != self.status) or (
            self.previous is None and self.status != "healthy"
        )


def _worst(statuses: list[str]) -> str:
    return max(statuses, key=SEVERITY.__getitem__, default="healthy")


def assess(company_id: str, stats: dict[str, Any], settings: KeysSettings) -> SessionHealth:
    """Turn one company's key statistics into a status with readable reasons."""
    found: list[tuple[str, str]] = []
    if not stats["has_auth"]:
        found.append(("unhealthy", "no creds row in whatsapp_auth: the phone must be paired again"))
    total = stats["total"]
    age = stats["hours_since_update"]
    if total == 0:
        found.append(("unhealthy", "no keys stored"))
    elif age is not None and age > settings.unhealthy_after_hours:
        found.append(("unhealthy", f"no key updated for {age:.0f} h"))
    elif age is not None and age > settings.warning_after_hours:
        found.append(("warning", f"no key updated for {age:.0f} h"))
    if total and stats["expired"] / total > settings.expired_share_unhealthy:
        found.append(("unhealthy", f"{stats['expired'] / total:.0%} of keys expired"))
    if total > settings.bloat_threshold:
        found.append(("warning", f"{total} keys, over the {settings.bloat_threshold} expected (bloat)"))
    details = {**stats, "problems": [reason for _, reason in found]}
    return SessionHealth(company_id, _worst([status for status, _ in found]), details["problems"], details)


def _previous_status(company_id: str) -> str | None:
    previous = HealthCheckRepository().latest(CHECK, subject=company_id)
    return previous["status"] if previous else None


def _alert(health: SessionHealth) -> None:
    """One Sentry event per change: worse (warning or error), or recovered (info)."""
    recovered = SEVERITY[health.status] < SEVERITY.get(health.previous or "healthy", 0)
    level = "info" if recovered else ("error" if health.status == "unhealthy" else "warning")
    verb = "recovered to" if recovered else "is"
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("check", CHECK)
        scope.set_tag("company", health.company_id)
        scope.set_tag("status", health.status)
        scope.set_extra("problems", health.problems)
        sentry_sdk.capture_message(f"WhatsApp session {verb} {health.status}", level=level)
    log.log(
        logging.WARNING if level != "info" else logging.INFO,
        "WhatsApp session of %s %s %s: %s",
        health.company_id,
        verb,
        health.status,
        "; ".join(health.problems) or "ok",
    )


def check_sessions(settings: KeysSettings) -> list[SessionHealth]:
    """Assess every company, store each result, alert on each change of status."""
    results = []
    for company_id, stats in sorted(WhatsAppKeysRepository().session_stats().items()):
        health = assess(company_id, stats, settings)
        with transaction() as conn:
            health.previous = _previous_status(company_id)
            checked_at = HealthCheckRepository().record(CHECK, health.status, health.details, subject=company_id)
            if health.changed and "unhealthy" in (health.status, health.previous):  # turned critical, or back
                subject = f"WhatsApp session of company {company_id}"
                text = change_text(subject, health.status, health.previous, health.problems)
                raise_alert(f"whatsapp:{company_id}:{checked_at.isoformat()}", "whatsapp_session", text, conn=conn)
        if health.changed:
            _alert(health)
        results.append(health)
    deliver_quietly()
    return results
