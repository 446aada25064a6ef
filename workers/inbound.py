"""Tasks of the inbound worker type: receive (store first), drain a chat, deliver replies, sweep."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from shared.errors import TransientError
from shared.gateway import GatewayClient
from shared.inbound.drain import chats_needing_a_drain, drain_chat
from shared.inbound.receive import receive, reject
from shared.models import E164, PositiveId
from shared.outbox import backoff_seconds, deliver, due_outbox_ids, next_in_chat
from shared.settings import get_settings
from workers.app import app
from workers.ping import define_ping, define_report

log = logging.getLogger(__name__)
ping = define_ping(__name__)
report_process = define_report(__name__)

_gateway: GatewayClient | None = None


def gateway() -> GatewayClient:
    """One HTTP client per worker child, made after fork on first use."""
    global _gateway
    if _gateway is None:
        _gateway = GatewayClient(get_settings().gateway)
    return _gateway


@app.task(
    name="workers.inbound.receive_message",
    bind=True,
    reject_on_worker_lost=True,
    max_retries=10,
    dead_letter_on_failure=True,
)
def receive_message(self: Task, payload: Any = None, **unexpected: Any) -> str:
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
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60)) from None
    if received.outcome != "rejected":
        drain_chat_task.apply_async(
            (received.company_id, received.chat_id), countdown=get_settings().inbound.burst_window_seconds
        )
    return received.outcome


@app.task(
    name="workers.inbound.drain_chat", bind=True, reject_on_worker_lost=True, max_retries=8, dead_letter_on_failure=True
)
def drain_chat_task(self: Task, company_id: PositiveId, chat_id: E164, isolate: bool = False) -> dict[str, Any]:
    """Answer the chat's pending messages; a failing burst is retried one message at a time."""
    try:
        result = drain_chat(company_id, chat_id, isolate=isolate)
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 30)) from None
    except Exception as exc:  # noqa: BLE001  (re-raised as a retry; the attempt cap dead-letters it)
        isolate_next = getattr(exc, "batch_size", 1) > 1 or isolate
        raise self.retry(
            exc=exc,
            countdown=min(2**self.request.retries, 30),
            args=(company_id, chat_id, isolate_next),  # positional, as sent: Celery merges these with the request's
            kwargs={},
        ) from None
    for outbox_id in result.outbox_ids:
        deliver_reply.delay(outbox_id)
    if result.more_pending or result.dead_lettered:
        drain_chat_task.delay(company_id, chat_id)
    return {"answered": len(result.answered), "dead_lettered": len(result.dead_lettered), "unsettled": result.unsettled}


@app.task(
    name="workers.inbound.deliver_reply",
    bind=True,
    reject_on_worker_lost=True,
    max_retries=12,
    dead_letter_on_failure=True,
)
def deliver_reply(self: Task, outbox_id: PositiveId) -> str:
    """Send one reply to the gateway; on success, hand the chat's next reply on."""
    settings = get_settings().gateway
    status = deliver(outbox_id, gateway(), settings)
    if status == "retry":
        raise self.retry(countdown=backoff_seconds(self.request.retries + 1, settings.retry_base_seconds))
    if status == "sent":
        following = next_in_chat(outbox_id)
        if following is not None:
            deliver_reply.delay(following)
    return status


@app.task(name="workers.inbound.sweep")
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
