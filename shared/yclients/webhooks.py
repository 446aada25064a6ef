"""YClients webhooks: checked, stored first, then handled by a targeted sync of the record they name.

YClients posts `{"company_id", "resource", "resource_id", "status", "data"}` to the URL configured in the
salon's account; the URL carries the fleet's shared secret (`?secret=` or the `X-Fleet-Webhook-Secret`
header). An event is trusted only as a hint: the record is read back from the API before anything changes,
and polling stays the safety net for a webhook that never came. A stored event is a work row
(shared/data/work_rows.py): each attempt at it is claimed and counted by its row, which is retried with
backoff while the failure is retryable and given up at `FLEET_YCLIENTS__WEBHOOK_MAX_ATTEMPTS`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.core.failure import backoff_delay, is_retryable
from shared.core.settings import Settings, YClientsSettings
from shared.data.dead_letters import record_dead_letter
from shared.data.repositories.webhook_events import WebhookEventRepository
from shared.yclients import rows as convert
from shared.yclients.client import YClientsClient
from shared.yclients.sync import sync_client, sync_record

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
RESOURCES = frozenset({"record", "client"})


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: dict[str, Any]


def _positive_int(event: dict[str, Any], field: str) -> int | None:
    """An id as the sync reads YClients' ids (numbers or numeric strings, positive, in bigint range)."""
    try:
        return convert.as_int(event, field)
    except convert.RowError:
        return None


def receive_webhook(
    settings: Settings, body: bytes, secret: str | None, enqueue: Callable[[int], Any]
) -> WebhookAnswer:
    """Check, store, and hand a new event to `enqueue`; a repeat changes nothing."""
    expected = settings.yclients.webhook_secret
    if expected is None:
        return WebhookAnswer(404, {"error": "webhooks are not enabled"})
    if secret is None or not hmac.compare_digest(secret.encode(), expected.get_secret_value().encode()):
        return WebhookAnswer(403, {"error": "wrong or missing secret"})
    if len(body) > MAX_BODY_BYTES:
        return _rejected(body[:2000], f"body of {len(body)} bytes is over {MAX_BODY_BYTES}")
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return _rejected(body[:2000], "body is not JSON")
    if not isinstance(event, dict):
        return _rejected(event, "body is not a JSON object")
    company_id, resource_id = _positive_int(event, "company_id"), _positive_int(event, "resource_id")
    resource, action = event.get("resource"), event.get("status")
    if company_id is None or resource_id is None or resource not in RESOURCES or not isinstance(action, str):
        return _rejected(event, "needs company_id, resource (record or client), resource_id and status")
    if company_id not in settings.yclients.company_ids:
        return _rejected(event, f"company {company_id} is not one the fleet keeps in sync")
    key = hashlib.sha256(json.dumps(event, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    event_id = WebhookEventRepository().store(key, company_id, resource, resource_id, action[:40], event)
    if event_id is None:
        return WebhookAnswer(200, {"accepted": False, "repeat": True})
    enqueue(event_id)
    return WebhookAnswer(202, {"accepted": True, "event_id": event_id})


def _rejected(payload: Any, reason: str) -> WebhookAnswer:
    """Kept as a dead letter with the reason; answered 400 (YClients does not resend)."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    record_dead_letter("yclients.webhook", reason, payload, error_type="InvalidWebhook")
    return WebhookAnswer(400, {"error": reason})


class Applied(StrEnum):
    """What one attempt at a stored event came to."""

    DONE = "done"  # the record or client read back and saved (or marked deleted)
    RETRY = "retry"  # a retryable failure: the event is due again later
    SKIPPED = "skipped"  # not this worker's to do now: finished, or leased to another attempt


@dataclass(frozen=True)
class Application:
    outcome: Applied
    note: str = ""  # after DONE: what the targeted sync did ("saved", "deleted", ...)
    retry_in: float = 0.0  # after RETRY: seconds until the event is due again


def apply_event(event_id: int, client: YClientsClient, settings: YClientsSettings) -> Application:
    """One attempt at a stored event. A failure no retry mends, or one past the event's attempts, gives the
    event up (failed, with the error) and is raised, for the task's dead letter and Sentry."""
    events = WebhookEventRepository()
    event = events.claim(event_id, settings.webhook_lease_seconds)
    if event is None:
        return Application(Applied.SKIPPED)
    targeted = sync_record if event["resource"] == "record" else sync_client
    try:
        note = targeted(client, settings, event["company_id"], event["resource_id"])
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if is_retryable(exc) and event["attempts"] < settings.webhook_max_attempts:
            delay = backoff_delay(
                event["attempts"], settings.webhook_retry_base_seconds, settings.webhook_retry_max_seconds
            )
            events.retry_later(event_id, error, delay)
            log.warning(
                "webhook event %s: attempt %s failed, again in %.0f s: %s", event_id, event["attempts"], delay, exc
            )
            return Application(Applied.RETRY, retry_in=delay)
        events.give_up(event_id, error)
        raise
    events.finish(event_id)
    return Application(Applied.DONE, note)
