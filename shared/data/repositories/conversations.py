"""Chat state: dialog contexts, stored inbound messages and the reply outbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg.types.json import Jsonb

from shared.core.db import Connection, queue, run, send
from shared.data.models import DialogContextIn, MessageIn, OutboxIn
from shared.data.repository import Repository, Row
from shared.data.work_rows import WORK_COLUMNS, WorkRows


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

    def load_later(self, company_id: int, chat_id: str, *, conn: Connection) -> Callable[[], Row | None]:
        """`load`, read when the returned function is called (see `shared.core.db.queue`)."""
        rows = queue(
            "SELECT * FROM dialog_contexts WHERE company_id = %s AND chat_id = %s",
            (company_id, chat_id),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return lambda: next(iter(rows()), None)

    def save(self, values: dict[str, Any], *, conn: Connection | None = None) -> Row:
        return self.upsert(values, conn=conn)

    def set_state(
        self, company_id: int, chat_id: str, state: str, data: dict[str, Any], *, conn: Connection | None = None
    ) -> Row:
        """Set only the dialog state (a notice outside the client's own message expects an answer)."""
        return self.upsert(
            {"company_id": company_id, "chat_id": chat_id, "state": state, "data": data},
            update=["state", "data"],
            conn=conn,
        )


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

    def by_gateway_id(self, company_id: int, gateway_message_id: str) -> Row | None:
        rows = run(
            "SELECT id, chat_seq, chat_id, body, media FROM messages WHERE company_id = %s AND gateway_message_id = %s",
            (company_id, gateway_message_id),
            table=self.table,
            operation="select",
        )
        return rows[0] if rows else None

    def insert_next_in_chat(self, values: dict[str, Any], *, conn: Connection) -> Callable[[], Row | None]:
        """Insert with the chat's next sequence number (the caller holds the chat's store lock); the reading
        gives None when a row with the same gateway message id exists already, or the company is not served
        (one statement for the common case; the caller tells the two apart only when nothing was inserted)."""
        rows = queue(
            """
            INSERT INTO messages (company_id, chat_id, gateway_message_id, chat_seq, body, media, sent_at, input_notes)
            SELECT %(company_id)s, %(chat_id)s, %(gateway_message_id)s, coalesce(max(chat_seq), 0) + 1,
                   %(body)s, %(media)s, %(sent_at)s, %(notes)s
              FROM messages WHERE company_id = %(company_id)s AND chat_id = %(chat_id)s
            HAVING EXISTS (SELECT 1 FROM companies WHERE id = %(company_id)s AND deleted_at IS NULL)
            ON CONFLICT (company_id, gateway_message_id) DO NOTHING
            RETURNING id, chat_seq
            """,
            {**values, "media": Jsonb(values["media"]) if values["media"] is not None else None},
            table=self.table,
            operation="insert",
            conn=conn,
        )
        return lambda: next(iter(rows()), None)

    def pending_in_chat(self, company_id: int, chat_id: str, burst_window: float, *, conn: Connection) -> list[Row]:
        """The chat's pending messages in order, only columns that always load (ids, counters, flags): an
        attempt is counted before any content is read. `fresh`: received within the burst window; `now`: the
        database clock, for the answer (one clock for every worker host, without a round trip of its own)."""
        return run(
            "SELECT id, chat_seq, attempts, error, received_at > now() - make_interval(secs => %s) AS fresh,"
            " now() AS now"
            " FROM messages WHERE company_id = %s AND chat_id = %s AND status = 'pending'"
            " ORDER BY sent_at, chat_seq",
            (burst_window, company_id, chat_id),
            table=self.table,
            operation="select",
            conn=conn,
        )

    def contents(self, ids: list[int], *, conn: Connection) -> Callable[[], dict[int, Row]]:
        """The messages' text and media by id, read when the returned function is called (see
        `shared.core.db.queue`)."""
        rows = queue(
            "SELECT id, body, media FROM messages WHERE id = ANY(%s)",
            (ids,),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return lambda: {row["id"]: row for row in rows()}

    def count_attempt(self, ids: list[int], *, conn: Connection) -> None:
        send(
            "UPDATE messages SET attempts = attempts + 1 WHERE id = ANY(%s)",
            (ids,),
            table=self.table,
            operation="update",
            conn=conn,
        )

    def mark_answered(self, ids: list[int], outbox_id: int, *, conn: Connection) -> None:
        """The last message of a burst is answered, the ones before it merged into that answer."""
        send(
            "UPDATE messages SET status = CASE WHEN id = %(last)s THEN 'answered' ELSE 'merged' END,"
            " answered_at = now(), outbox_id = %(outbox)s, error = NULL WHERE id = ANY(%(ids)s)",
            {"last": ids[-1], "outbox": outbox_id, "ids": ids},
            table=self.table,
            operation="update",
            conn=conn,
        )

    def mark_held(self, ids: list[int], *, conn: Connection) -> None:
        """Kept without an automatic answer: the chat is with the salon's administrator."""
        send(
            "UPDATE messages SET status = 'held', answered_at = now(), error = NULL WHERE id = ANY(%s)",
            (ids,),
            table=self.table,
            operation="update",
            conn=conn,
        )

    def held_count(self, company_id: int, chat_id: str) -> int:
        """Messages of the chat kept for the salon's administrator (not answered automatically)."""
        rows = run(
            "SELECT count(*) AS held FROM messages WHERE company_id = %s AND chat_id = %s AND status = 'held'",
            (company_id, chat_id),
            table=self.table,
            operation="select",
        )
        return int(rows[0]["held"])

    def mark_failed(self, ids: list[int], *, conn: Connection) -> dict[int, Row]:
        """Give the messages up; their content comes back as text, so a value Python cannot load (a year
        20000, say) is still kept with the dead letter."""
        rows = run(
            "UPDATE messages SET status = 'failed' WHERE id = ANY(%s)"
            " RETURNING id, body, media::text AS media, sent_at::text AS sent_at",
            (ids,),
            table=self.table,
            operation="update",
            conn=conn,
        )
        return {row["id"]: row for row in rows}

    def record_error(self, ids: list[int], error: str, *, conn: Connection) -> None:
        """Keep why the last attempt failed; the messages stay pending."""
        send(
            "UPDATE messages SET error = %s WHERE id = ANY(%s) AND status = 'pending'",
            (error, ids),
            table=self.table,
            operation="update",
            conn=conn,
        )

    def chats_pending_since(self, grace_seconds: float, limit: int) -> list[tuple[int, str]]:
        rows = run(
            "SELECT DISTINCT company_id, chat_id FROM messages WHERE status = 'pending'"
            " AND received_at < now() - make_interval(secs => %s) LIMIT %s",
            (grace_seconds, limit),
            table=self.table,
            operation="select",
        )
        return [(row["company_id"], row["chat_id"]) for row in rows]


class OutboxRepository(WorkRows):
    """Replies to WhatsApp, written with the chat's answer and delivered after it commits; a chat's replies
    reach the client in order (the order key), each claimed with a lease (shared/data/work_rows.py)."""

    table = "outbox"
    columns = WORK_COLUMNS | frozenset(
        {"company_id", "chat_id", "idempotency_key", "body", "message_ids", "created_at"}
    )
    key = ("idempotency_key",)
    model = OutboxIn
    order_key = ("company_id", "chat_id")
