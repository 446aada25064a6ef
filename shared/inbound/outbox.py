"""The reply outbox: replies are written with the chat's state and delivered afterwards, at least once.

A delivery claims its row with a lease (so two workers do not send it at once and a crashed sender's row
is picked up by the sweep), sends every part with a stable id, then marks the row sent.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from shared.core.db import run
from shared.core.settings import GatewaySettings
from shared.data.dead_letters import record_dead_letter
from shared.inbound.gateway import GatewayClient, GatewayError

log = logging.getLogger(__name__)


def split_message(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` characters, cut at paragraph breaks, then lines, then spaces."""
    if len(text) <= limit:
        return [text]
    for separator in ("\n\n", "\n", " "):
        pieces = text.split(separator)
        if len(pieces) == 1:
            continue
        parts: list[str] = []
        current = ""
        for piece in pieces:
            candidate = f"{current}{separator}{piece}" if current else piece
            if len(candidate) <= limit:
                current = candidate
                continue
            if current:
                parts.append(current)
            current = piece
        parts.append(current)
        return [chunk for part in parts for chunk in split_message(part, limit)]
    return [text[start : start + limit] for start in range(0, len(text), limit)]


def claim(outbox_id: int, lease_seconds: float) -> dict[str, Any] | None:
    """Take the row for one delivery attempt, or None when it is sent, failed, leased by another worker, or
    an older reply of the same chat is still pending (replies reach the client in order)."""
    rows = run(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND status = 'pending' AND next_attempt_at <= now()"
        " AND NOT EXISTS (SELECT 1 FROM outbox older WHERE older.company_id = outbox.company_id"
        " AND older.chat_id = outbox.chat_id AND older.status = 'pending' AND older.id < outbox.id)"
        " RETURNING *",
        (lease_seconds, outbox_id),
        table="outbox",
        operation="update",
    )
    return rows[0] if rows else None


def mark_sent(outbox_id: int) -> None:
    run(
        "UPDATE outbox SET status = 'sent', sent_at = now(), last_error = NULL WHERE id = %s AND status = 'pending'",
        (outbox_id,),
        table="outbox",
        operation="update",
    )


def mark_retry(outbox_id: int, error: str, delay_seconds: float) -> None:
    run(
        "UPDATE outbox SET last_error = %s, next_attempt_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND status = 'pending'",
        (error[:500], delay_seconds, outbox_id),
        table="outbox",
        operation="update",
    )


def give_up(row: dict[str, Any], error: str) -> None:
    run(
        "UPDATE outbox SET status = 'failed', last_error = %s WHERE id = %s AND status = 'pending'",
        (error[:500], row["id"]),
        table="outbox",
        operation="update",
    )
    record_dead_letter(
        "inbound.deliver",
        f"reply not delivered after {row['attempts']} attempts: {error}",
        {"outbox_id": row["id"], "chat_id": row["chat_id"], "body": row["body"]},
        error_type="GatewayError",
        company_id=row["company_id"],
        reference=f"outbox:{row['id']}",
    )


def send_parts(row: dict[str, Any], gateway: GatewayClient, settings: GatewaySettings) -> int:
    parts = split_message(row["body"], settings.max_part_chars)
    for index, part in enumerate(parts, 1):
        part_id = row["idempotency_key"] if len(parts) == 1 else f"{row['idempotency_key']}#{index}/{len(parts)}"
        gateway.send(row["chat_id"], part, part_id)
    return len(parts)


def backoff_seconds(attempt: int, base: float) -> float:
    return float(min(2 ** max(attempt - 1, 0) * base, 300))


class Delivery(StrEnum):
    """What one delivery attempt came to."""

    SENT = "sent"
    SKIPPED = "skipped"  # not ours to send now: sent already, leased by another worker, or an earlier reply first
    RETRY = "retry"
    FAILED = "failed"


def deliver(outbox_id: int, gateway: GatewayClient, settings: GatewaySettings) -> Delivery:
    """One delivery attempt."""
    row = claim(outbox_id, settings.lease_seconds)
    if row is None:
        return Delivery.SKIPPED
    try:
        send_parts(row, gateway, settings)
    except GatewayError as exc:
        if exc.retryable and row["attempts"] < settings.max_attempts:
            mark_retry(outbox_id, str(exc), backoff_seconds(row["attempts"], settings.retry_base_seconds))
            log.warning("reply %s not delivered (attempt %s): %s", outbox_id, row["attempts"], exc)
            return Delivery.RETRY
        give_up(row, str(exc))
        return Delivery.FAILED
    mark_sent(outbox_id)
    return Delivery.SENT


def next_in_chat(outbox_id: int) -> int | None:
    """The chat's next pending reply after this one, to deliver straight after it."""
    rows = run(
        "SELECT o.id FROM outbox o JOIN outbox sent ON sent.id = %s AND o.company_id = sent.company_id"
        " AND o.chat_id = sent.chat_id WHERE o.status = 'pending' AND o.id > sent.id ORDER BY o.id LIMIT 1",
        (outbox_id,),
        table="outbox",
        operation="select",
    )
    return rows[0]["id"] if rows else None


def due_outbox_ids(limit: int = 500) -> list[int]:
    rows = run(
        "SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY id LIMIT %s",
        (limit,),
        table="outbox",
        operation="select",
    )
    return [row["id"] for row in rows]
