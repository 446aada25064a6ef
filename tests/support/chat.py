"""A client talking to the assistant through the real queue, read at the gateway stand-in, and the records it
makes in the salon's calendar: what the booking-loop tests share (fixtures: tests/support/booking_loop.py)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import psycopg

from ops.standins.gateway import GatewayStandIn
from ops.standins.yclients import YClientsStandIn
from tests.support.booking_loop import COMPANY
from tests.support.processes import wait_until
from workers.producer import enqueue_message

CHAT = "+79110001122"


class Chat:
    """One client talking to the assistant through the real queue, reading replies at the gateway."""

    def __init__(self, gateway: GatewayStandIn, db: psycopg.Connection, chat: str = CHAT) -> None:
        self.gateway, self.db, self.chat, self.n = gateway, db, chat, 0

    def replies(self) -> list[str]:
        return [d.message for d in self.gateway.to(self.chat)]

    def say(self, text: str) -> str:
        self.n += 1
        before = len(self.replies())
        enqueue_message(
            {
                "company_id": COMPANY,
                "chat_id": self.chat,
                "gateway_message_id": f"loop-{self.chat}-{self.n}-{time.time()}",
                "text": text,
                "sent_at": datetime.now(UTC).isoformat(),
            }
        )
        wait_until(lambda: len(self.replies()) > before, 30, f"the answer to {text!r}")
        return self.replies()[before]

    def wait_for(self, fragment: str, timeout: float = 30) -> str:
        wait_until(lambda: any(fragment in r for r in self.replies()), timeout, f"a reply with {fragment!r}")
        return next(r for r in self.replies() if fragment in r)

    def offered(self) -> list[tuple[int, datetime]]:
        """The slots the last list offered, as the dialog holds them: (staff id, start)."""
        data = self.db.execute(
            "SELECT data FROM dialog_contexts WHERE company_id = %s AND chat_id = %s", (COMPANY, self.chat)
        ).fetchone()[0]
        return [(staff, datetime.fromisoformat(start)) for staff, start in data["slots"]]

    def choose_first_service(self) -> list[tuple[int, datetime]]:
        self.say("2")
        assert "Выберите услугу" in self.replies()[-1]
        self.say("1")
        return self.offered()


def booking_of(db: psycopg.Connection, chat: str = CHAT) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT b.id, b.yclients_id, b.staff_id, b.starts_at, b.status, b.crm_state FROM bookings b"
        " JOIN clients c ON c.id = b.client_id WHERE c.phone = %s ORDER BY b.id DESC LIMIT 1",
        (chat,),
    ).fetchone()
    return (
        None
        if row is None
        else dict(zip(("id", "yclients_id", "staff_id", "starts_at", "status", "crm"), row, strict=True))
    )


def records(loop_stand_in: YClientsStandIn, booking_id: int) -> list[dict[str, Any]]:
    return loop_stand_in.calendar(COMPANY, api_id=f"fleet-booking-{booking_id}")


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
