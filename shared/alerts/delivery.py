"""Alerts for operators: raised in the transaction of the change they report, delivered to Telegram after.

An alert is a row in `alerts` keyed by the change it reports, so a change is announced once however often it
is noticed, and an alert raised while Telegram is down waits instead of being lost. `deliver_due` sends the
due ones oldest first (right after they are raised, and every 30 s from beat), backing off on failure and
honouring Telegram's `retry_after`; a delivery that dies after sending may repeat once (at least once). Each
alert is a work row (shared/data/work_rows.py): claimed with a lease, done once sent, failed once given up.
Without a bot token and chat in the settings nothing is stored: Sentry stays the only channel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sentry_sdk

from shared.alerts.telegram import TelegramClient, TelegramError
from shared.core.db import Connection
from shared.core.failure import backoff_delay
from shared.core.settings import AlertSettings, get_settings
from shared.data.errors import DataLayerError
from shared.data.repositories.alerts import AlertRepository

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 900.0
PER_RUN = 20  # a run sends at most this many (Telegram allows about 20 a minute into one group)


def raise_alert(key: str, kind: str, text: str, *, conn: Connection | None = None) -> bool:
    """Store the alert for Telegram (inside the caller's transaction when `conn`); True if it is new.

    Outside a transaction it cannot fail its caller: an alert that cannot be stored is logged, and Sentry,
    which the caller also told, still has it.
    """
    if not get_settings().alerts.enabled:
        return False
    if conn is not None:
        return AlertRepository().add(key, kind, text, conn=conn)
    try:
        return AlertRepository().add(key, kind, text)
    except DataLayerError as exc:
        log.error("alert %s could not be stored (%s)", kind, type(exc).__name__)
        return False


@dataclass
class DeliveryRun:
    """What one run did: alerts sent, alerts whose attempt failed and that wait for a retry, alerts given up."""

    sent: int = 0
    retried: int = 0
    given_up: int = 0


def deliver_due(settings: AlertSettings | None = None, client: TelegramClient | None = None) -> DeliveryRun:
    """Send due alerts until none is due, PER_RUN are sent, or Telegram fails (the rest wait for the next run)."""
    settings = settings or get_settings().alerts
    outcome = DeliveryRun()
    if not settings.enabled:
        return outcome
    telegram = client or TelegramClient(settings)
    alerts = AlertRepository()
    try:
        while outcome.sent < PER_RUN:
            alert = alerts.claim_next(lease_seconds=settings.timeout_seconds * 3)
            if alert is None:
                break
            try:
                telegram.send(alert["text"])
            except TelegramError as exc:
                _failed(alerts, alert, exc, settings, outcome)
                break
            alerts.finish(alert["id"])
            outcome.sent += 1
    finally:
        if client is None:
            telegram.close()
    return outcome


def deliver_quietly() -> None:
    """Deliver right after raising, from whatever job noticed the change; any trouble is left to the next
    scheduled run (`workers.health.deliver_alerts`), never to the caller."""
    try:
        deliver_due()
    except Exception as exc:  # noqa: BLE001  (the alert is stored; the scheduled run delivers it)
        log.warning("alert delivery deferred to the next run: %s", type(exc).__name__)


def _failed(
    alerts: AlertRepository, alert: dict, exc: TelegramError, settings: AlertSettings, outcome: DeliveryRun
) -> None:
    if alert["attempts"] >= settings.max_attempts:
        alerts.give_up(alert["id"], str(exc))
        outcome.given_up += 1
        log.error("alert %s given up after %s attempts: %s", alert["id"], alert["attempts"], exc)
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("operation", "alerts.telegram")
            sentry_sdk.capture_message(f"Telegram alert given up after {alert['attempts']} attempts", level="error")
        return
    backoff = backoff_delay(alert["attempts"], settings.retry_base_seconds, MAX_RETRY_SECONDS)
    retry_in = max(backoff, exc.retry_after or 0.0)
    alerts.retry_later(alert["id"], str(exc), retry_in)
    outcome.retried += 1
    log.warning("alert %s not delivered (%s); next try in %.0f s", alert["id"], exc, retry_in)


MARKS = {"healthy": "🟢", "warning": "🟠", "unhealthy": "🔴"}


def change_text(subject: str, status: str, previous: str | None, problems: list[str]) -> str:
    """'🔴 <subject>: unhealthy (was healthy)' and one line per problem: reasons and figures, no personal data."""
    head = f"{MARKS.get(status, '⚪')} {subject}: {status}" + (f" (was {previous})" if previous else "")
    return "\n".join([head, *(f"• {problem}" for problem in problems)])
