"""YClients webhooks: checked per salon, stored as ids, then handled by a targeted sync of the record they name.

YClients posts `{"company_id", "resource", "resource_id", "status", "data"}` to the URL configured in the
salon's account. Each salon has a secret of its own (`fleet webhook-secret`, stored hashed), sent in the
`X-Fleet-Webhook-Secret` header or the path (`/yclients/webhook/<company>/<secret>`), never the query string;
it is checked before the body is read, and it opens the door for its own salon only. Every refusal reads the
same (`REFUSED`, with its status code): the detail goes to the log, so a stranger learns nothing of which
salons the fleet serves or which part was wrong.

An event is only a hint: the record is read back from the API before anything changes, and polling stays the
safety net. So the event keeps ids (never the body's names and phones), webhooks for a record whose event has
not been attempted yet are folded into it (one read serves them all), and a salon starts at most
`FLEET_YCLIENTS__WEBHOOK_READS_PER_MINUTE` targeted syncs a minute (the rest wait for the sweep): the yclients
queue also carries every salon's bookings to YClients. A stored event is a work row
(shared/data/work_rows.py): each attempt at it is claimed and counted by its row, which is retried with
backoff while the failure is retryable and given up at `FLEET_YCLIENTS__WEBHOOK_MAX_ATTEMPTS`.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from shared.core.failure import backoff_delay, is_retryable
from shared.core.settings import Settings, YClientsSettings
from shared.data.dead_letters import record_dead_letter
from shared.data.repositories.webhook_events import WebhookEventRepository, WebhookSecretRepository
from shared.yclients import rows as convert
from shared.yclients.client import YClientsClient
from shared.yclients.sync import sync_client, sync_record

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
RESOURCES = frozenset({"record", "client"})
REFUSED: dict[str, Any] = {"error": "refused"}  # the one refusal text, whatever was wrong
SWEEP_GRACE_SECONDS = 60.0  # a minute for an event's own task to start before the sweep sends another


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Door:
    """Who a webhook's secret lets in: one salon (its own secret), or, outside production, any salon the fleet
    syncs that has no secret of its own yet (the old fleet-wide secret, `legacy`)."""

    company_id: int | None
    legacy: bool = False


def refused(status: int, detail: str) -> WebhookAnswer:
    """The generic refusal; the detail (never a secret) goes to the log only."""
    log.warning("webhook refused (%s): %s", status, detail)
    return WebhookAnswer(status, dict(REFUSED))


def open_door(settings: Settings, secret: str | None, company_in_path: int | None) -> Door | None:
    """The door a secret opens, before any of the body is read; None refuses the request."""
    if not secret:
        return None
    company = WebhookSecretRepository().company_of(secret)
    if company is not None:
        return Door(company) if company_in_path in (None, company) else None
    legacy = settings.yclients.webhook_secret
    if (
        legacy is None
        or settings.environment == "production"
        or not hmac.compare_digest(secret.encode(), legacy.get_secret_value().encode())
    ):
        return None
    if company_in_path is not None and not _legacy_may_open(settings, company_in_path):
        return None
    return Door(company_in_path, legacy=True)


def _legacy_may_open(settings: Settings, company_id: int) -> bool:
    """The old secret serves only salons the fleet syncs that have no secret of their own yet."""
    return company_id in settings.yclients.company_ids and not WebhookSecretRepository().has_secret(company_id)


class SalonReads:
    """How many targeted syncs each salon's webhooks may start: a moving minute per salon, shared through Redis
    by every process (the health service's and the sweep's)."""

    def __init__(self, redis_url: str, per_minute: int) -> None:
        self._limiter = MovingWindowRateLimiter(RedisStorage(redis_url, key_prefix="fleet-webhook-reads"))
        self._item = RateLimitItemPerMinute(per_minute)

    def allow(self, company_id: int) -> bool:
        """Count one read for the salon if it is under its limit; False: the event waits for the sweep."""
        return self._limiter.hit(self._item, str(company_id))


@lru_cache(maxsize=4)
def _salon_reads(redis_url: str, per_minute: int) -> SalonReads:
    return SalonReads(redis_url, per_minute)


def salon_reads(settings: Settings) -> SalonReads:
    """The process's limiter (one Redis connection pool per URL and limit)."""
    return _salon_reads(settings.redis_url.get_secret_value(), settings.yclients.webhook_reads_per_minute)


def _positive_int(event: dict[str, Any], field: str) -> int | None:
    """An id as the sync reads YClients' ids (numbers or numeric strings, positive, in bigint range)."""
    try:
        return convert.as_int(event, field)
    except convert.RowError:
        return None


def receive_webhook(settings: Settings, body: bytes, door: Door, enqueue: Callable[[int], Any]) -> WebhookAnswer:
    """Check the event against its door, store its ids, and hand a new event to `enqueue` while its salon is
    under its limit; a webhook for a record whose event still waits changes nothing on the queue."""
    if len(body) > MAX_BODY_BYTES:
        return _rejected(None, f"body of {len(body)} bytes is over {MAX_BODY_BYTES}", door)
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return _rejected(None, "body is not JSON", door)
    if not isinstance(event, dict):
        return _rejected(None, "body is not a JSON object", door)
    company_id, resource_id = _positive_int(event, "company_id"), _positive_int(event, "resource_id")
    resource, action = event.get("resource"), event.get("status")
    if company_id is None or resource_id is None or resource not in RESOURCES or not isinstance(action, str):
        return _rejected(event, "needs company_id, resource (record or client), resource_id and status", door)
    if door.company_id is not None and company_id != door.company_id:
        return refused(403, f"an event of company {company_id} through the door of company {door.company_id}")
    if company_id not in settings.yclients.company_ids:
        return _rejected(event, f"company {company_id} is not one the fleet keeps in sync", door)
    if door.legacy and door.company_id is None and not _legacy_may_open(settings, company_id):
        return refused(403, f"the fleet-wide secret does not open company {company_id}'s door: it has its own")
    events = WebhookEventRepository()
    event_id = events.store(company_id, resource, resource_id, action[:40])
    if event_id is None:
        return WebhookAnswer(200, {"accepted": True})
    if salon_reads(settings).allow(company_id):
        enqueue(event_id)
    else:
        log.info("webhook event %s of company %s waits for the sweep (salon over its reads)", event_id, company_id)
    return WebhookAnswer(202, {"accepted": True})


def _rejected(event: dict[str, Any] | None, reason: str, door: Door) -> WebhookAnswer:
    """Kept as a dead letter with the reason and the event's ids only (its data holds names and phones);
    answered 400 with the generic refusal (YClients does not resend)."""
    ids = None
    if event is not None:
        ids = {field: str(event.get(field))[:40] for field in ("company_id", "resource", "resource_id", "status")}
    record_dead_letter("yclients.webhook", reason, ids, error_type="InvalidWebhook", company_id=door.company_id)
    return refused(400, reason)


def drive_due_events(settings: Settings, enqueue: Callable[[int], Any], limit: int = 500) -> tuple[int, int]:
    """The sweep's part: events whose task was lost, or never sent (their salon was over its reads), sent again
    within each salon's limit. Returns (sent, still waiting)."""
    reads = salon_reads(settings)
    sent = waiting = 0
    for row in WebhookEventRepository().due_events(limit, grace_seconds=SWEEP_GRACE_SECONDS):
        if reads.allow(row["company_id"]):
            enqueue(row["id"])
            sent += 1
        else:
            waiting += 1
    return sent, waiting


class Applied(StrEnum):
    """What one attempt at a stored event came to."""

    DONE = "done"  # the record or client read back and saved (or marked deleted)
    RETRY = "retry"  # a retryable failure: the event is due again later
    SKIPPED = "skipped"  # not this worker's to do now: finished, or leased to another attempt
    WAITING = "waiting"  # a CRM write of the record is pending: read after it, the sweep brings the event back


@dataclass(frozen=True)
class Application:
    outcome: Applied
    note: str = ""  # after DONE: what the targeted sync did ("saved", "deleted", ...)
    retry_in: float = 0.0  # after RETRY: seconds until the event is due again


def apply_event(event_id: int, client: YClientsClient, settings: YClientsSettings) -> Application:
    """One attempt at a stored event. A failure no retry mends, or one past the event's attempts, gives the
    event up (failed, with the error) and is raised, for the task's dead letter and Sentry."""
    events = WebhookEventRepository()
    if events.crm_write_pending(event_id):
        # Reading the record now could save what YClients held before the fleet's own write of it.
        events.postpone(event_id, settings.webhook_crm_wait_seconds)
        return Application(Applied.WAITING)
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
