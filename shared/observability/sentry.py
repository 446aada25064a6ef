"""Sentry set-up shared by every process type, with personal data and secrets kept out of events.

Phones, names and message text must never leave the fleet. The SDK is told not to send PII, task arguments
and local variables are dropped, and any phone- or e-mail-shaped text left in a message is masked. Every
configured secret (shared/observability/redaction.py) is masked in every string of an event or breadcrumb:
a Bot API request's URL holds the bot's token, and Sentry keeps requests and log lines as breadcrumbs.
"""

from __future__ import annotations

import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

from shared.core.settings import Settings
from shared.observability.redaction import configure_secrets, current_masker

# 10 to 15 digits, with the separators people write between them; bounded by non-digits only, so a phone glued
# to a word ("тел89991234567") or followed by a full stop is masked too.
PHONE_PATTERN = re.compile(r"(?<!\d)\+?\d(?:[\s().-]{0,3}\d){9,14}(?!\d)")
EMAIL_PATTERN = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_MASKED = "[filtered]"


def scrub_text(text: str) -> str:
    """Mask anything shaped like a phone number or e-mail address."""
    return EMAIL_PATTERN.sub(_MASKED, PHONE_PATTERN.sub(_MASKED, text))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def scrub_event(event: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """`before_send`: drop user, request bodies and task arguments; mask secrets in every string of the event,
    then phones and e-mails in its text."""
    event = current_masker().mask_all(event)
    event.pop("user", None)
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("data", "cookies", "query_string", "headers"):
            request.pop(key, None)
    job = event.get("extra", {}).get("celery-job")
    if isinstance(job, dict):
        job.pop("args", None)
        job.pop("kwargs", None)
    for exception in event.get("exception", {}).get("values", []) or []:
        for frame in (exception.get("stacktrace") or {}).get("frames", []) or []:
            frame.pop("vars", None)
    for key in ("message", "logentry", "exception", "extra", "breadcrumbs", "contexts", "tags"):
        if key in event:
            event[key] = _scrub(event[key])
    return event


def scrub_breadcrumb(crumb: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """`before_breadcrumb`: secrets first (a token's digits must not be half-masked as a phone), then phones."""
    return _scrub(current_masker().mask_all(crumb))


def init_sentry(settings: Settings, component: str, transport: type[Transport] | None = None) -> bool:
    """Initialise Sentry for this process; returns False (and does nothing) when no DSN is set."""
    if settings.sentry_dsn is None and transport is None:
        return False
    configure_secrets(settings)
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else "http://public@localhost/0"
    options: dict[str, Any] = {}
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(
        dsn=dsn,
        environment=settings.environment,
        data_collection={
            "user_info": False,
            "http_bodies": [],
            "database_query_data": False,
            "queues": False,
            "stack_frame_variables": False,
        },
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        traces_sample_rate=0.0,
        integrations=[
            CeleryIntegration(monitor_beat_tasks=True, propagate_traces=False),
            LoggingIntegration(),
        ],
        **options,
    )
    sentry_sdk.get_global_scope().set_tag("component", component)
    return True
