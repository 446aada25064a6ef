"""Chat state: dialog contexts, stored inbound messages and the reply outbox."""

from __future__ import annotations

from typing import Any

from shared.core.db import Connection
from shared.data.models import DialogContextIn, MessageIn, OutboxIn
from shared.data.repository import Repository, Row


class DialogContextRepository(Repository):
    table = "dialog_contexts"
    columns = frozenset(
        {"company_id", "chat_id", "client_id", "state", "data", "last_seq", "answered_seq", "created_at", "updated_at"}
    )
    key = ("company_id", "chat_id")
    model = DialogContextIn
    json_columns = frozenset({"data"})

    def load(self, company_id: int, chat_id: str, *, conn: Connection | None = None) -> Row | None:
        return self.find_one({"company_id": company_id, "chat_id": chat_id}, conn=conn)

    def save(self, values: dict[str, Any], *, conn: Connection | None = None) -> Row:
        return self.upsert(values, conn=conn)


class MessageRepository(Repository):
    table = "messages"
    columns = frozenset(
        {
            "id",
            "company_id",
            "chat_id",
            "gateway_message_id",
            "chat_seq",
            "body",
            "media",
            "sent_at",
            "received_at",
            "status",
            "attempts",
            "answered_at",
            "outbox_id",
            "error",
        }
    )
    model = MessageIn
    json_columns = frozenset({"media"})


class OutboxRepository(Repository):
    table = "outbox"
    columns = frozenset(
        {
            "id",
            "company_id",
            "chat_id",
            "idempotency_key",
            "body",
            "message_ids",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
            "sent_at",
        }
    )
    key = ("idempotency_key",)
    model = OutboxIn
