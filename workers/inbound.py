"""Tasks of the inbound worker type: receive (store first), drain a chat, deliver replies, sweep."""

from __future__ import annotations

import logging
from typing import Any

from shared.core.resources import resource
from shared.core.settings import get_settings
from shared.data.errors import TransientError
from shared.data.models import E164, PositiveId
from shared.inbound.drain import DrainResult, chats_needing_a_drain, drain_chat
from shared.inbound.gateway import GatewayClient
from shared.inbound.outbox import Delivery, deliver, due_outbox_ids
from shared.inbound.payload import TASK_NAME
from shared.inbound.receive import receive, reject
from shared.inbound.reminders import send_due_reminders
from workers.app import app
from workers.base import FleetTask
from workers.ping import define_ping, define_report

log = logging.getLogger(__name__)
ping = define_ping(__name__)
report_process = define_report(__name__)


def gateway() -> GatewayClient:
    """One HTTP client per worker child, made after fork on first use, closed at child shutdown."""
    return resource("gateway", lambda: GatewayClient(get_settings().gateway), GatewayClient.close)


@app.task(
    name=TASK_NAME,
    bind=True,
    reject_on_worker_lost=True,
    max_retries=10,
    dead_letter_on_failure=True,
    retry_backoff_max=60,
)
def receive_message(self: FleetTask, payload: Any = None, **unexpected: Any) -> str:
    """Store the message first, then schedule its chat's drain after the burst window."""
    try:
        received = receive(payload, unexpected, task_id=self.request.id)
    except TransientError as exc:
        if self.request.retries >= self.max_retries:
            reject(
                payload,
                f"could not store after {self.request.retries} retries: {exc}",
                "TransientError",
                task_id=self.request.id,
            )
            return "dead-lettered"
        raise self.retry(exc=exc, countdown=self.backoff()) from None
    if received.outcome == "rejected":
        return received.outcome
    assert received.company_id is not None
    assert received.chat_id is not None
    window = get_settings().inbound.burst_window_seconds
    if window > 0 or received.outcome == "duplicate":
        drain_chat_task.apply_async((received.company_id, received.chat_id), countdown=window)
        return received.outcome
    # No burst to wait for: answer and deliver here, saving two tasks a message. The stored message is the
    # safety net: if this fails or the worker dies, the drain task (or, at worst, the sweep) answers it.
    try:
        result = drain_chat(received.company_id, received.chat_id)
    except Exception as exc:  # noqa: BLE001  (the drain task's retries and attempt cap take it from here)
        log.warning("answering in the receiving task failed (%s); a drain task answers instead", type(exc).__name__)
        drain_chat_task.apply_async((received.company_id, received.chat_id), countdown=self.backoff())
        return received.outcome
    hand_on(result, received.company_id, received.chat_id)
    return received.outcome


@app.task(
    name="workers.inbound.drain_chat",
    bind=True,
    reject_on_worker_lost=True,
    max_retries=8,
    dead_letter_on_failure=True,
    retry_backoff_max=30,
)
def drain_chat_task(self: FleetTask, company_id: PositiveId, chat_id: E164, isolate: bool = False) -> dict[str, Any]:
    """Answer the chat's pending messages; a failing burst is retried one message at a time."""
    try:
        result = drain_chat(company_id, chat_id, isolate=isolate)
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=self.backoff()) from None
    except Exception as exc:  # noqa: BLE001  (any answering failure is retried; the attempt cap dead-letters it)
        isolate_next = getattr(exc, "batch_size", 1) > 1 or isolate
        raise self.retry(
            exc=exc,
            countdown=self.backoff(),
            args=(company_id, chat_id, isolate_next),  # positional, as sent: Celery merges these with the request's
            kwargs={},
        ) from None
    hand_on(result, company_id, chat_id)
    return {"answered": len(result.answered), "dead_lettered": len(result.dead_lettered), "unsettled": result.unsettled}


def hand_on(result: DrainResult, company_id: int, chat_id: str) -> None:
    """After a drain: its reply delivered here (one task fewer a message), the rest as tasks."""
    for outbox_id in result.outbox_ids:
        deliver_now(outbox_id)
    for operation_id in result.crm_operation_ids:
        app.send_task("workers.yclients.push_booking", (operation_id,))  # the sweep re-drives a lost one
    if result.more_pending or result.dead_lettered:
        drain_chat_task.delay(company_id, chat_id)


def deliver_now(outbox_id: int) -> None:
    """One delivery attempt in the calling task; a retry, a failure to even try, or the chat's next reply
    becomes a `deliver_reply` task (the outbox row is written, so the sweep is the net under all of it)."""
    settings = get_settings().gateway
    try:
        outcome = deliver(outbox_id, gateway(), settings)
    except Exception as exc:  # noqa: BLE001  (the delivery task's retries take it from here)
        log.warning("delivering reply %s in place failed (%s); a delivery task retries", outbox_id, type(exc).__name__)
        # After the lease: a claim this attempt may have taken has run out by then.
        deliver_reply.apply_async((outbox_id,), countdown=settings.lease_seconds)
        return
    if outcome.status is Delivery.RETRY:
        deliver_reply.apply_async((outbox_id,), countdown=outcome.retry_in)
    elif outcome.following is not None:
        deliver_reply.delay(outcome.following)


@app.task(
    name="workers.inbound.deliver_reply",
    bind=True,
    reject_on_worker_lost=True,
    max_retries=12,
    dead_letter_on_failure=True,
    retry_backoff_max=300,
)
def deliver_reply(self: FleetTask, outbox_id: PositiveId) -> str:
    """Send one reply to the gateway; on success, hand the chat's next reply on."""
    settings = get_settings().gateway
    outcome = deliver(outbox_id, gateway(), settings)
    if outcome.status is Delivery.RETRY:
        raise self.retry(countdown=outcome.retry_in)  # when the row is due again
    if outcome.following is not None:
        deliver_reply.delay(outcome.following)
    return outcome.status


# Beat jobs keep their result (a small summary) for an hour: an operator who runs one by hand can read what it
# did. Per-message tasks keep none (thousands a minute).
@app.task(name="workers.inbound.sweep", ignore_result=False)
def sweep() -> dict[str, int]:
    """Re-drive work whose enqueue was lost: chats with old pending messages, replies due for delivery."""
    chats = chats_needing_a_drain(get_settings().inbound.sweep_grace_seconds)
    for company_id, chat_id in chats:
        drain_chat_task.delay(company_id, chat_id)
    replies = due_outbox_ids()
    for outbox_id in replies:
        deliver_reply.delay(outbox_id)
    if chats or replies:
        log.info("sweep re-drove %s chats and %s replies", len(chats), len(replies))
    return {"chats": len(chats), "replies": len(replies)}


@app.task(name="workers.inbound.send_reminders", ignore_result=False)
def send_reminders() -> int:
    """Beat's minute job: due reminders written once each, then delivered like any reply."""
    written = send_due_reminders(get_settings())
    for outbox_id in written:
        deliver_reply.delay(outbox_id)
    return len(written)
