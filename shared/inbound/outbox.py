"""The reply outbox: replies are written with the chat's state and delivered afterwards, at least once.

A delivery claims its row with a lease (so two workers do not send it at once and a crashed sender's row
is picked up by the sweep), sends every part from the row's salon with a stable id, then marks the row done;
the row counts the attempts and is given up (failed) at `FLEET_GATEWAY__MAX_ATTEMPTS` (shared/data/work_rows.py),
or at the first refusal no retry mends (a 4xx such as a salon the gateway holds no session of), with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.core.db import Connection
from shared.core.failure import backoff_delay
from shared.core.settings import GatewaySettings
from shared.data.dead_letters import record_dead_letter
from shared.data.repositories.conversations import DialogContextRepository, OutboxRepository
from shared.data.repository import Row
from shared.inbound.gateway import GatewayClient, GatewayError

log = logging.getLogger(__name__)


def write_notice(
    company_id: int,
    chat_id: str,
    idempotency_key: str,
    text: str,
    *,
    conn: Connection,
    dialog: tuple[str, dict[str, Any]] | None = None,
) -> int:
    """A message the client gets without having written one (a booking's outcome, a reminder): one outbox row
    per key, and, with `dialog`, the state and data that read the client's answer. The caller holds the chat's
    answering lock, so the state is not overwritten by a reply in flight."""
    row = OutboxRepository().upsert(
        {
            "company_id": company_id,
            "chat_id": chat_id,
            "idempotency_key": idempotency_key,
            "body": text,
            "message_ids": [],
        },
        update=[],
        conn=conn,
    )
    if dialog is not None:
        DialogContextRepository().set_state(company_id, chat_id, dialog[0], dialog[1], conn=conn)
    return row["id"]


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


def give_up(row: dict[str, Any], error: str) -> int | None:
    """The reply is failed and kept as a dead letter; returns the chat's next pending reply, which no longer
    waits for it."""
    following = OutboxRepository().give_up(row["id"], error)
    record_dead_letter(
        "inbound.deliver",
        f"reply not delivered after {row['attempts']} attempts: {error}",
        {"outbox_id": row["id"], "chat_id": row["chat_id"], "body": row["body"]},
        error_type="GatewayError",
        company_id=row["company_id"],
        reference=f"outbox:{row['id']}",
    )
    return following


def send_parts(row: dict[str, Any], gateway: GatewayClient, settings: GatewaySettings) -> int:
    """Every part from the row's own salon (its WhatsApp session), whatever wrote the row: a reply, a reminder
    or a CRM notice; the gateway id is `<company>:<key>`, with `#n/m` for a part."""
    parts = split_message(row["body"], settings.max_part_chars)
    for index, part in enumerate(parts, 1):
        part_key = row["idempotency_key"] if len(parts) == 1 else f"{row['idempotency_key']}#{index}/{len(parts)}"
        gateway.send(company_id=row["company_id"], phone=row["chat_id"], message=part, key=part_key)
    return len(parts)


RETRY_CAP_SECONDS = 300


class Delivery(StrEnum):
    """What one delivery attempt came to."""

    SENT = "sent"
    SKIPPED = "skipped"  # not ours to send now: sent already, leased by another worker, or an earlier reply first
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Delivered:
    status: Delivery
    following: int | None = None  # after SENT or FAILED: the chat's next pending reply, to deliver straight after
    retry_in: float = 0.0  # after RETRY: seconds until the row is due again (an earlier try finds it leased)


def deliver(outbox_id: int, gateway: GatewayClient, settings: GatewaySettings) -> Delivered:
    """One delivery attempt."""
    row = OutboxRepository().claim(outbox_id, settings.lease_seconds)
    if row is None:
        return Delivered(Delivery.SKIPPED)
    return deliver_claimed(row, gateway, settings)


def deliver_claimed(row: Row, gateway: GatewayClient, settings: GatewaySettings) -> Delivered:
    """One delivery attempt of a reply already claimed (its attempt counted, leased to the caller)."""
    outbox, outbox_id = OutboxRepository(), int(row["id"])
    try:
        send_parts(row, gateway, settings)
    except GatewayError as exc:
        if exc.retryable and row["attempts"] < settings.max_attempts:
            delay = backoff_delay(row["attempts"], settings.retry_base_seconds, RETRY_CAP_SECONDS)
            outbox.retry_later(outbox_id, str(exc), delay)
            log.warning("reply %s not delivered (attempt %s): %s", outbox_id, row["attempts"], exc)
            return Delivered(Delivery.RETRY, retry_in=delay)
        return Delivered(Delivery.FAILED, give_up(row, str(exc)))
    return Delivered(Delivery.SENT, outbox.finish(outbox_id))


def due_outbox_ids(limit: int = 500) -> list[int]:
    return OutboxRepository().due_ids(limit)
