"""Tasks of the inbound worker type: receive (store first), drain a chat, deliver replies, sweep."""

from __future__ import annotations

import logging
from typing import Any

from shared.core.resources import resource
from shared.core.settings import get_settings
from shared.core.topology import TaskName
from shared.data.errors import TransientError
from shared.data.models import E164, PositiveId
from shared.data.repository import Row
from shared.inbound.drain import DrainResult, attempt_failed, chats_needing_a_drain, drain_chat
from shared.inbound.gateway import GatewayClient
from shared.inbound.outbox import Delivery, deliver, deliver_claimed, due_outbox_ids
from shared.inbound.receive import receive, reject
from shared.inbound.reminders import send_due_reminders
from workers.app import app
from workers.base import FleetTask
from workers.ping import define_ping, define_report

log = logging.getLogger(__name__)
ping = define_ping(TaskName.INBOUND_PING)
report_process = define_report(TaskName.INBOUND_REPORT)


def gateway() -> GatewayClient:
    """One HTTP client per worker child, made after fork on first use, closed at child shutdown."""
    return resource("gateway", lambda: GatewayClient(get_settings().gateway), GatewayClient.close)


@app.task(
    name=TaskName.RECEIVE_MESSAGE.value,
    bind=True,
    reject_on_worker_lost=True,
    max_retries=10,
    dead_letter_on_failure=True,
    retry_backoff_max=60,
)
def receive_message(self: FleetTask, payload: Any = None, **unexpected: Any) -> str:
    """Store the message first, then schedule its chat's drain after the burst window. Until it is stored there
    is no row to count the tries, so the task's own policy does (then the payload is a dead letter)."""
    try:
        received = receive(payload, unexpected, task_id=self.request.id)
    except TransientError as exc:
        if self.retries_spent:
            reject(
                payload,
                f"could not store after {self.request.retries} retries: {exc}",
                "TransientError",
                task_id=self.request.id,
            )
            return "dead-lettered"
        self.retry_later(exc)
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
        result = drain_chat(received.company_id, received.chat_id, claim_lease=get_settings().gateway.lease_seconds)
    except Exception as exc:  # noqa: BLE001  (a drain task takes it from here)
        if not drain_when_due(exc, received.company_id, received.chat_id):
            log.warning("answering in the receiving task failed (%s); a drain task answers instead", type(exc).__name__)
            drain_chat_task.apply_async((received.company_id, received.chat_id), countdown=self.backoff())
        return received.outcome
    hand_on(result, received.company_id, received.chat_id)
    return received.outcome


@app.task(
    name=TaskName.DRAIN_CHAT.value,
    bind=True,
    reject_on_worker_lost=True,
    max_retries=8,
    dead_letter_on_failure=True,
    retry_backoff_max=30,
)
def drain_chat_task(self: FleetTask, company_id: PositiveId, chat_id: E164, isolate: bool = False) -> dict[str, Any]:
    """Answer the chat's pending messages. The messages count every answering attempt and are dead-lettered at
    their cap, so a failed attempt hands the chat to its next drain when they are due; the task's own retries
    (`max_retries`) are only for a drain that never reached them (the database away, the chat's lock held)."""
    try:
        result = drain_chat(company_id, chat_id, isolate=isolate, claim_lease=get_settings().gateway.lease_seconds)
    except Exception as exc:  # noqa: BLE001  (whichever failure: the messages' cap or the task's retries end it)
        if not drain_when_due(exc, company_id, chat_id, isolate):
            self.retry_later(exc)
        return {"answered": 0, "dead_lettered": 0, "unsettled": False, "failed": True}
    hand_on(result, company_id, chat_id)
    return {"answered": len(result.answered), "dead_lettered": len(result.dead_lettered), "unsettled": result.unsettled}


def drain_when_due(failure: BaseException, company_id: int, chat_id: str, isolate: bool = False) -> bool:
    """After an answering attempt its messages counted: the chat's next drain when they are due again, a failing
    burst then one message at a time. False when the drain failed before counting one."""
    due = attempt_failed(failure)
    if due is None:
        return False
    log.warning("answering chat failed (%s); the chat is drained again in %.1f s", type(failure).__name__, due.retry_in)
    drain_chat_task.apply_async((company_id, chat_id, isolate or due.batch_size > 1), countdown=due.retry_in)
    return True


def hand_on(result: DrainResult, company_id: int, chat_id: str) -> None:
    """After a drain: its reply delivered here (one task fewer a message), the rest as tasks. A reply the drain
    claimed is sent at once. One it could not claim (the chat's earlier reply was pending) is claimed again now
    that it is committed: the earlier reply's delivery may have ended between the claim and the commit without
    seeing it, and then nobody else would hand it on; if the earlier one is still pending, its delivery will."""
    for outbox_id in result.outbox_ids:
        deliver_now(outbox_id, result.claimed.get(outbox_id))
    for operation_id in result.crm_operation_ids:
        app.send_task(TaskName.PUSH_BOOKING, (operation_id,))  # the sweep re-drives a lost one
    if result.more_pending or result.dead_lettered:
        drain_chat_task.delay(company_id, chat_id)


def deliver_now(outbox_id: int, claimed: Row | None = None) -> None:
    """One delivery attempt in the calling task (of the row as `claimed`, else claimed here); a retry, a failure
    to even try, or the chat's next reply becomes a `deliver_reply` task (the outbox row is written, so the
    sweep is the net under all of it)."""
    settings = get_settings().gateway
    try:
        if claimed is None:
            outcome = deliver(outbox_id, gateway(), settings)
        else:
            outcome = deliver_claimed(claimed, gateway(), settings)
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
    name=TaskName.DELIVER_REPLY.value,
    bind=True,
    reject_on_worker_lost=True,
    max_retries=None,
    dead_letter_on_failure=True,
)
def deliver_reply(self: FleetTask, outbox_id: PositiveId) -> str:
    """Send one reply to the gateway; on success, hand the chat's next reply on. The outbox row counts the
    attempts and gives up after `FLEET_GATEWAY__MAX_ATTEMPTS`; the task only comes back when the row is due."""
    settings = get_settings().gateway
    outcome = deliver(outbox_id, gateway(), settings)
    if outcome.status is Delivery.RETRY:
        self.retry_when_due(outcome.retry_in)
    if outcome.following is not None:
        deliver_reply.delay(outcome.following)
    return outcome.status


# Beat jobs keep their result (a small summary) for an hour: an operator who runs one by hand can read what it
# did. Per-message tasks keep none (thousands a minute).
@app.task(name=TaskName.INBOUND_SWEEP.value, ignore_result=False)
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


@app.task(name=TaskName.SEND_REMINDERS.value, ignore_result=False)
def send_reminders() -> int:
    """Beat's minute job: due reminders written once each, then delivered like any reply."""
    written = send_due_reminders(get_settings())
    for outbox_id in written:
        deliver_reply.delay(outbox_id)
    return len(written)
