"""YClients webhooks: checked, stored first, then handled by a targeted sync of the record they name.

YClients posts `{"company_id", "resource", "resource_id", "status", "data"}` to the URL configured in the
salon's account; the URL carries the fleet's shared secret (`?secret=` or the `X-Fleet-Webhook-Secret`
header). An event is trusted only as a hint: the record is read back from the API before anything changes,
and polling stays the safety net for a webhook that never came.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.core.settings import Settings
from shared.data.dead_letters import record_dead_letter
from shared.data.repositories import webhook_events
from shared.yclients import rows as convert

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
    event_id = webhook_events.store(key, company_id, resource, resource_id, action[:40], event)
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
