"""Store first: every inbound message is written before anything else, once, with its place in the chat."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.types.json import Jsonb

from shared.db import run, transaction
from shared.errors import NotFoundError
from shared.inbound.payload import InboundPayload

STORE_LOCK = 1  # advisory lock class: assigning the next sequence number of one chat


@dataclass(frozen=True)
class StoredMessage:
    id: int
    chat_seq: int
    duplicate: bool


class UnknownCompanyError(NotFoundError):
    """The payload names a company the fleet does not serve."""


def chat_key(company_id: int, chat_id: str) -> str:
    return f"{company_id}:{chat_id}"


def store_message(message: InboundPayload) -> StoredMessage:
    """Insert the message with the next per-chat sequence; a re-delivery returns the stored row unchanged."""
    with transaction():
        existing = run(
            "SELECT id, chat_seq FROM messages WHERE company_id = %s AND gateway_message_id = %s",
            (message.company_id, message.gateway_message_id),
            table="messages",
            operation="select",
        )
        if existing:
            return StoredMessage(existing[0]["id"], existing[0]["chat_seq"], duplicate=True)
        if not run(
            "SELECT 1 FROM companies WHERE id = %s AND deleted_at IS NULL",
            (message.company_id,),
            table="companies",
            operation="select",
        ):
            raise UnknownCompanyError(f"company {message.company_id} is not served", table="companies")
        # Serialise sequence assignment within one chat only; other chats store in parallel.
        run(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
            (STORE_LOCK, chat_key(message.company_id, message.chat_id)),
            table="messages",
            operation="lock",
        )
        rows = run(
            """
            INSERT INTO messages (company_id, chat_id, gateway_message_id, chat_seq, body, media, sent_at)
            SELECT %(company_id)s, %(chat_id)s, %(gateway_message_id)s, coalesce(max(chat_seq), 0) + 1,
                   %(body)s, %(media)s, %(sent_at)s
              FROM messages WHERE company_id = %(company_id)s AND chat_id = %(chat_id)s
            ON CONFLICT (company_id, gateway_message_id) DO NOTHING
            RETURNING id, chat_seq
            """,
            {
                "company_id": message.company_id,
                "chat_id": message.chat_id,
                "gateway_message_id": message.gateway_message_id,
                "body": message.text,
                "media": Jsonb(message.media.model_dump()) if message.media else None,
                "sent_at": message.sent_at,
            },
            table="messages",
            operation="insert",
        )
        if not rows:  # a concurrent delivery of the same message won the race
            again = run(
                "SELECT id, chat_seq FROM messages WHERE company_id = %s AND gateway_message_id = %s",
                (message.company_id, message.gateway_message_id),
                table="messages",
                operation="select",
            )
            return StoredMessage(again[0]["id"], again[0]["chat_seq"], duplicate=True)
        return StoredMessage(rows[0]["id"], rows[0]["chat_seq"], duplicate=False)
