"""Store first: every inbound message is written before anything else, once, with its place in the chat."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.db import Connection, connection, current_connection, pipelined
from shared.core.locks import LockClass, transaction_lock
from shared.core.settings import InboundSettings, get_settings
from shared.data.errors import NotFoundError, TransientError
from shared.data.repositories.catalogue import CompanyRepository
from shared.data.repositories.conversations import MessageRepository
from shared.inbound.payload import InboundPayload


@dataclass(frozen=True)
class StoredMessage:
    id: int
    chat_seq: int
    duplicate: bool


class UnknownCompanyError(NotFoundError):
    """The payload names a company the fleet does not serve."""


class ConflictingRepeatError(ValueError):
    """A gateway message id already stored with other content: not a re-delivery, so not dropped silently."""


def settle_sent_at(sent_at: datetime, received_at: datetime, settings: InboundSettings) -> tuple[datetime, str | None]:
    """`sent_at` inside the window, else the receive time and a note that keeps the original.

    A clock that is hours off (or a year 9999) must neither drop the client's message nor sort it before or
    after the rest of the chat forever; the receive time keeps it in the order it arrived.
    """
    earliest = received_at - timedelta(hours=settings.sent_at_max_age_hours)
    latest = received_at + timedelta(seconds=settings.sent_at_max_ahead_seconds)
    if earliest <= sent_at <= latest:
        return sent_at, None
    side = "before" if sent_at < earliest else "after"
    return received_at, (
        f"sent_at {sent_at.isoformat()} is {side} the accepted window ({settings.sent_at_max_age_hours:g} h back,"
        f" {settings.sent_at_max_ahead_seconds:g} s ahead); stored with the receive time"
    )


def _same_content(stored: dict[str, Any], message: InboundPayload) -> bool:
    media = message.media.model_dump() if message.media else None
    return stored["chat_id"] == message.chat_id and stored["body"] == message.text and stored["media"] == media


def chat_key(company_id: int, chat_id: str) -> str:
    return f"{company_id}:{chat_id}"


def store_message(message: InboundPayload) -> StoredMessage:
    """Insert the message with the next per-chat sequence; a re-delivery returns the stored row unchanged."""
    received_at = datetime.now(UTC)
    sent_at, window_note = settle_sent_at(message.sent_at, received_at, get_settings().inbound)
    notes = message.input_notes + ([window_note] if window_note else [])
    values = {
        "company_id": message.company_id,
        "chat_id": message.chat_id,
        "gateway_message_id": message.gateway_message_id,
        "body": message.text,
        "media": message.media.model_dump() if message.media else None,
        "sent_at": sent_at,
        "notes": notes,
    }
    with connection() as conn:
        if current_connection() is None:
            # One round trip: the lock and the insert leave together and run as one implicit transaction of the
            # pipeline, committed at its end (PostgreSQL's extended protocol: the statements between two Syncs).
            with pipelined(conn):
                row = _insert(conn, message, values)
        else:  # inside the caller's transaction: its statements, its commit
            row = _insert(conn, message, values)
    inserted = row()
    if inserted is not None:
        return StoredMessage(inserted["id"], inserted["chat_seq"], duplicate=False)
    # Nothing inserted: a re-delivery (possibly one committed while we waited), or a company not served.
    existing = _stored(message)
    if existing is not None:
        return existing
    if CompanyRepository().find_one({"id": message.company_id, "deleted_at__is_null": True}) is None:
        raise UnknownCompanyError(f"company {message.company_id} is not served", table="companies")
    # A concurrent delivery of this id held the key and rolled back after ours waited on it: retry.
    raise TransientError("messages: a concurrent delivery rolled back", table="messages")


def _insert(conn: Connection, message: InboundPayload, values: dict[str, Any]) -> Callable[[], dict[str, Any] | None]:
    # Serialise sequence assignment within one chat only; other chats store in parallel.
    transaction_lock(LockClass.STORE_CHAT, chat_key(message.company_id, message.chat_id), table="messages", conn=conn)
    return MessageRepository().insert_next_in_chat(values, conn=conn)


def _stored(message: InboundPayload) -> StoredMessage | None:
    """The earlier delivery of this message id, if any; other content under the same id is refused."""
    row = MessageRepository().by_gateway_id(message.company_id, message.gateway_message_id)
    if row is None:
        return None
    if not _same_content(row, message):
        raise ConflictingRepeatError(
            f"gateway_message_id already stored as message {row['id']} with other content"
            " (chat, text or media differ); this copy is kept here, the stored one is answered"
        )
    return StoredMessage(row["id"], row["chat_seq"], duplicate=True)
