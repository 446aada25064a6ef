"""`crm_operations`: the CRM outbox. A booking, move or cancellation made in a chat is committed together with
one row here, and the YClients worker carries each row out, in order per booking, until it is done, refused
by YClients, or given up."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from shared.core.db import Connection, run
from shared.data.repository import Row, outbox_backlog

TABLE = "crm_operations"
KINDS = ("create", "reschedule", "cancel", "confirm")


def api_id(booking_id: int) -> str:
    """Our id for the booking's record in YClients (`api_id`): how a create whose answer was lost is found."""
    return f"fleet-booking-{booking_id}"


def booking_of(record_api_id: object) -> int | None:
    """The booking a YClients record's `api_id` says we created, or None for anyone else's record."""
    prefix = "fleet-booking-"
    if isinstance(record_api_id, str) and record_api_id.startswith(prefix) and record_api_id[len(prefix) :].isdigit():
        return int(record_api_id[len(prefix) :])
    return None


def add(
    company_id: int,
    booking_id: int,
    kind: str,
    *,
    chat_id: str | None,
    details: dict[str, Any] | None = None,
    conn: Connection | None = None,
) -> int:
    if kind not in KINDS:
        raise ValueError(f"unknown CRM operation {kind!r}")
    return run(
        "INSERT INTO crm_operations (company_id, booking_id, kind, chat_id, details) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id",
        (company_id, booking_id, kind, chat_id, Jsonb(details or {})),
        table=TABLE,
        operation="insert",
        conn=conn,
    )[0]["id"]


def claim(operation_id: int, lease_seconds: float) -> Row | None:
    """Take the operation for one attempt, or None when it is finished, leased by another worker, not due,
    or an older operation of the same booking is still pending (they reach YClients in order)."""
    rows = run(
        "UPDATE crm_operations SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND status = 'pending' AND next_attempt_at <= now()"
        " AND NOT EXISTS (SELECT 1 FROM crm_operations older WHERE older.booking_id = crm_operations.booking_id"
        " AND older.status = 'pending' AND older.id < crm_operations.id)"
        " RETURNING *",
        (lease_seconds, operation_id),
        table=TABLE,
        operation="update",
    )
    return rows[0] if rows else None


def finish(operation_id: int, status: str, outcome: str, *, conn: Connection | None = None) -> None:
    run(
        "UPDATE crm_operations SET status = %s, outcome = %s, finished_at = now() WHERE id = %s AND status = 'pending'",
        (status, outcome[:500], operation_id),
        table=TABLE,
        operation="update",
        conn=conn,
    )


def retry_later(operation_id: int, error: str, delay_seconds: float) -> None:
    run(
        "UPDATE crm_operations SET last_error = %s, next_attempt_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND status = 'pending'",
        (error[:500], delay_seconds, operation_id),
        table=TABLE,
        operation="update",
    )


def next_for_booking(operation_id: int) -> int | None:
    """The same booking's next pending operation after this one."""
    rows = run(
        "SELECT o.id FROM crm_operations o JOIN crm_operations done ON done.id = %s"
        " AND o.booking_id = done.booking_id WHERE o.status = 'pending' AND o.id > done.id ORDER BY o.id LIMIT 1",
        (operation_id,),
        table=TABLE,
        operation="select",
    )
    return rows[0]["id"] if rows else None


def due_ids(limit: int = 200) -> list[int]:
    """Pending operations whose attempt is due: the oldest pending one of each booking."""
    rows = run(
        "SELECT id FROM (SELECT DISTINCT ON (booking_id) id, next_attempt_at FROM crm_operations"
        " WHERE status = 'pending' ORDER BY booking_id, id) oldest WHERE next_attempt_at <= now() ORDER BY id LIMIT %s",
        (limit,),
        table=TABLE,
        operation="select",
    )
    return [row["id"] for row in rows]


def backlog() -> Row:
    """Pending and failed operations, and the age in seconds of the oldest pending one."""
    return outbox_backlog(TABLE)


def recent(status: str | None, limit: int) -> list[Row]:
    """The newest operations (of one status, if given), for operators."""
    return run(
        "SELECT id, company_id, booking_id, kind, status, attempts, created_at, finished_at,"
        " coalesce(outcome, last_error) AS note FROM crm_operations"
        " WHERE %(status)s::text IS NULL OR status = %(status)s ORDER BY id DESC LIMIT %(limit)s",
        {"status": status, "limit": limit},
        table=TABLE,
        operation="select",
    )


def reopen(operation_id: int) -> bool:
    """A given-up operation tried again from the start (the operator fixed the cause); False unless failed."""
    rows = run(
        "UPDATE crm_operations SET status = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL,"
        " outcome = NULL WHERE id = %s AND status = 'failed' RETURNING 1",
        (operation_id,),
        table=TABLE,
        operation="update",
    )
    return bool(rows)
