"""Answer one chat: its pending messages, in order, by one worker at a time, all in one transaction.

A per-chat advisory lock (held on one connection across the steps) keeps two workers from answering one
chat at once. Each attempt is counted in its own committed step first, so a message that keeps failing,
even by killing its worker, is dead-lettered after the cap and the chat moves on. The messages are the only
count: a failed attempt says when they are due again (`attempt_failed`), and the next drain decides.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.assistant import Assistant, Reply, Turn, load_assistant
from shared.assistant.tools import SalonTools
from shared.core.db import Connection, pipelined, pipelined_transaction
from shared.core.db_errors import DatabaseError
from shared.core.failure import backoff_delay
from shared.core.locks import LockClass, limit_lock_wait, session_lock, session_unlock
from shared.core.pool import get_session_pool
from shared.core.resources import resource
from shared.core.settings import InboundSettings, get_settings
from shared.data.dead_letters import record_dead_letter
from shared.data.errors import DataLayerError
from shared.data.repositories.catalogue import CompanyRepository, StaffRepository
from shared.data.repositories.conversations import DialogContextRepository, MessageRepository, OutboxRepository
from shared.data.repositories.people import ClientRepository
from shared.data.repository import Row
from shared.inbound.store import chat_key

log = logging.getLogger(__name__)

LOCK_NOT_AVAILABLE = "55P03"  # the chat's lock was not had within the lock timeout
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 30.0


@dataclass
class DrainResult:
    outbox_ids: list[int] = field(default_factory=list)
    crm_operation_ids: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    dead_lettered: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # kept without an automatic answer (a person has the chat)
    unsettled: bool = False
    more_pending: bool = False
    # With `claim_lease`: each reply's claim for its delivery, taken in the transaction that wrote it (None: an
    # earlier reply of the chat was pending; the caller claims it again after the commit, see workers/inbound.py).
    claimed: dict[int, Row | None] = field(default_factory=dict)


@dataclass(frozen=True)
class FailedAttempt:
    """An answering attempt that failed after its messages counted it: what the chat's next drain needs."""

    batch_size: int  # over one: the next drain answers one message at a time, to find the one that fails
    retry_in: float  # seconds until the messages are due again


def attempt_failed(error: BaseException) -> FailedAttempt | None:
    """The counted attempt `error` ended, or None when the drain failed before counting one (the database
    away, the chat's lock held by another worker)."""
    if not hasattr(error, "retry_in"):
        return None
    return FailedAttempt(error.batch_size, error.retry_in)  # type: ignore[attr-defined]


def assistant() -> Assistant:
    """The configured assistant, made once per process."""
    path = get_settings().assistant
    return resource(f"assistant:{path}", lambda: load_assistant(path))


def merge_replies(texts: list[str]) -> str:
    """One reply for a burst: every answer kept, in order, consecutive repeats said once."""
    merged: list[str] = []
    for text in texts:
        if text and (not merged or merged[-1] != text):
            merged.append(text)
    return "\n\n".join(merged)


def _dead_letter_exhausted(company_id: int, chat_id: str, rows: list[dict[str, Any]], conn: Connection) -> list[int]:
    ids = [row["id"] for row in rows]
    content = MessageRepository().mark_failed(ids, conn=conn)
    for row in rows:
        record_dead_letter(
            "inbound.answer",
            f"answering failed {row['attempts']} times: {row['error'] or 'worker lost'}",
            {
                "message_id": row["id"],
                "chat_id": chat_id,
                "chat_seq": row["chat_seq"],
                "text": content[row["id"]]["body"],
                "media": content[row["id"]]["media"],
                "sent_at": content[row["id"]]["sent_at"],
            },
            error_type="AnswerFailed",
            company_id=company_id,
            reference=f"message:{row['id']}",
            conn=conn,
        )
    return ids


def _answer(
    company_id: int,
    chat_id: str,
    batch: list[dict[str, Any]],
    conn: Connection,
    now: datetime,
    result: DrainResult,
    claim_lease: float | None,
) -> tuple[int, Callable[[], Row | None] | None] | None:
    """Client, context, assistant, new context, outbox row and message statuses: one transaction. What the answer
    reads leaves in one round trip (with the attempt's commit queued before it), what it writes in two: the outbox
    row and the context together, then the statuses with the commit and the unlock (`drain_chat`). With
    `claim_lease` the reply's claim for delivery leaves with the statuses: the outbox id and its reading."""
    contexts = DialogContextRepository()
    company_read = CompanyRepository().get_later(company_id, conn=conn)
    client_read = ClientRepository().find_by_phone_later(company_id, chat_id, conn=conn)
    context_read = contexts.load_later(company_id, chat_id, conn=conn)
    contents_read = MessageRepository().contents([message["id"] for message in batch], conn=conn)
    staff_read = StaffRepository().bookable_later(company_id, conn=conn)  # most answers name or match a master
    company = company_read()
    client = client_read() or ClientRepository().create_by_phone(company_id, chat_id, conn=conn)
    context = context_read() or {"state": "idle", "data": {}}
    contents = contents_read()
    tools = SalonTools(company, client, now, chat_id=chat_id, staff=staff_read)
    state, data = context["state"], context["data"]
    texts = []
    for message in batch:
        content = contents[message["id"]]
        turn = Turn(company, client, content["body"], content["media"], state, data, now)
        reply: Reply = assistant().reply(turn, tools)
        state, data = reply.state, reply.data
        texts.append(reply.text)
    ids = [message["id"] for message in batch]
    body = merge_replies(texts)
    outbox = None
    if body:  # no text at all: the chat is with a person (handed over), the messages are kept for them
        outbox = OutboxRepository().upsert_later(
            {
                "company_id": company_id,
                "chat_id": chat_id,
                "idempotency_key": f"reply:{company_id}:{ids[0]}-{ids[-1]}",
                "body": body,
                "message_ids": ids,
            },
            update=[],
            conn=conn,
        )
    contexts.upsert_later(
        {
            "company_id": company_id,
            "chat_id": chat_id,
            "client_id": client["id"],
            "state": state,
            "data": data,
            "answered_seq": max(message["chat_seq"] for message in batch),
        },
        conn=conn,
    )
    result.crm_operation_ids += tools.crm_operation_ids
    if outbox is None:
        MessageRepository().mark_held(ids, conn=conn)
        return None
    outbox_id = int(outbox()["id"])  # the outbox row and the context leave together here
    MessageRepository().mark_answered(ids, outbox_id, conn=conn)
    if claim_lease is None:
        return outbox_id, None
    return outbox_id, OutboxRepository().claim_later(outbox_id, claim_lease, conn=conn)


def record_failure(message_ids: list[int], error: BaseException, conn: Connection) -> None:
    """Keep why the last attempt failed, for the dead letter; the message itself stays pending."""
    MessageRepository().record_error(message_ids, f"{type(error).__name__}: {str(error)[:500]}", conn=conn)


def drain_chat(
    company_id: int,
    chat_id: str,
    *,
    isolate: bool = False,
    now: datetime | None = None,
    claim_lease: float | None = None,
) -> DrainResult:
    """Answer the chat's settled pending messages; `isolate` answers only the oldest (to find a bad one). A caller
    that delivers the reply itself right after passes `claim_lease`: the reply is claimed for its delivery in the
    transaction that writes it (`DrainResult.claimed`), a round trip fewer than claiming it afterwards. A worker
    that dies before sending leaves the claim to run out, and the sweep sends the reply then, as after any claim."""
    settings: InboundSettings = get_settings().inbound
    result = DrainResult()
    key = chat_key(company_id, chat_id)
    messages = MessageRepository()
    # The chat's lock is held across two transactions on one connection, whose statements leave together: the
    # lock with the pending messages' read; the attempt count and its commit with the answer's reads; the answer's
    # commit, the statuses and the unlock at the end (`pipelined`: a round trip a reading, not a statement).
    claim: tuple[int, Callable[[], Row | None]] | None = None  # the reply's id and the reading of its claim
    with get_session_pool().connection() as conn:
        locked = False
        try:
            with pipelined(conn):
                try:
                    with pipelined_transaction(conn):  # the lock and the attempt count: one transaction, one commit
                        limit_lock_wait(settings.lock_timeout_ms, conn=conn)
                        session_lock(LockClass.ANSWER_CHAT, key, table="messages", conn=conn)
                        locked = True  # a session lock outlives this transaction, even its rollback
                        try:
                            pending = messages.pending_in_chat(
                                company_id, chat_id, settings.burst_window_seconds, conn=conn
                            )
                        except DatabaseError as exc:
                            locked = exc.sqlstate != LOCK_NOT_AVAILABLE  # a lock not had has nothing to release
                            raise
                        if pending and any(row["fresh"] for row in pending):
                            result.unsettled = True  # a newer message's own drain answers the burst
                            return result
                        exhausted = [row for row in pending if row["attempts"] >= settings.max_attempts]
                        if exhausted:
                            result.dead_lettered = _dead_letter_exhausted(company_id, chat_id, exhausted, conn)
                        batch = [row for row in pending if row["attempts"] < settings.max_attempts]
                        if isolate:
                            batch = batch[:1]
                        if not batch:
                            return result
                        messages.count_attempt([row["id"] for row in batch], conn=conn)
                    result.more_pending = len(batch) < len(pending) - len(exhausted)
                    try:
                        with pipelined_transaction(conn):
                            moment = now or batch[0]["now"]
                            answer = _answer(company_id, chat_id, batch, conn, moment, result, claim_lease)
                        if answer is not None:
                            outbox_id, claim_read = answer
                            result.outbox_ids.append(outbox_id)
                            if claim_read is not None:
                                claim = outbox_id, claim_read
                        else:
                            result.held = [row["id"] for row in batch]
                    except Exception as exc:
                        record_failure([row["id"] for row in batch], exc, conn)
                        attempts = max(row["attempts"] for row in batch) + 1  # counted above
                        exc.batch_size = len(batch)  # type: ignore[attr-defined]  (the task isolates a failing burst)
                        exc.retry_in = backoff_delay(attempts, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)  # type: ignore[attr-defined]
                        raise
                    result.answered = [row["id"] for row in batch]
                finally:
                    if locked:
                        session_unlock(LockClass.ANSWER_CHAT, key, table="messages", conn=conn)
        except BaseException:
            if locked:  # the pipeline failed at its end, where the unlock queued above may have been skipped
                with contextlib.suppress(DataLayerError):  # runs at once now; a lock let go answers false
                    session_unlock(LockClass.ANSWER_CHAT, key, table="messages", conn=conn)
            raise
        if claim is not None:  # read after the pipeline's end, which brought it with the commit
            claimed_id, claim_read = claim
            result.claimed[claimed_id] = claim_read()
    return result


def chats_needing_a_drain(grace_seconds: float, limit: int = 500) -> list[tuple[int, str]]:
    """Chats whose pending messages are older than the grace period: their drain was lost or failed."""
    return MessageRepository().chats_pending_since(grace_seconds, limit)
