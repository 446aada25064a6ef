"""What every inbound test with real workers checks at its end: each chat answered once, in order."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from ops.standins.gateway import GatewayStandIn
from shared.inbound.gateway import gateway_id


def assert_each_chat_answered_once_in_order(
    db: psycopg.Connection, gateway: GatewayStandIn, chats: Iterable[str]
) -> None:
    """Every message of each chat is in exactly one reply, replies follow the order the messages were sent,
    and they reached the gateway in that order, each from its own salon, none twice."""
    for chat in chats:
        sent_order = [
            row[0] for row in db.execute("SELECT id FROM messages WHERE chat_id = %s ORDER BY sent_at", (chat,))
        ]
        outbox = db.execute(
            "SELECT company_id, idempotency_key, message_ids FROM outbox WHERE chat_id = %s ORDER BY id", (chat,)
        ).fetchall()
        assert [message_id for *_, ids in outbox for message_id in ids] == sent_order, f"chat {chat} out of order"
        expected = [(company, gateway_id(company, key)) for company, key, _ in outbox]
        sent = [(d.company, d.id) for d in gateway.to(chat)]
        assert sent == expected, "replies reached the gateway in order, each from its own salon"
    assert gateway.repeats == 0
