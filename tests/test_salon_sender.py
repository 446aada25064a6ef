"""Each salon's messages leave from its own WhatsApp number: the gateway holds many salons' sessions and sends
from the one the request names (`company_id`, and the id `<company>:<key>`), for replies, reminders and CRM
notices alike. A send it cannot place is refused with a reason, and the fleet gives that reply up at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ops.standins.gateway import GatewayStandIn, gateway_stand_in
from shared.core.settings import GatewaySettings, get_settings
from shared.core.topology import TaskName
from shared.data.repositories.calendar import BookingRepository
from shared.data.repositories.crm_operations import CrmOperationRepository
from shared.data.repositories.people import ClientRepository
from shared.inbound.drain import drain_chat
from shared.inbound.gateway import GatewayClient, GatewayError, gateway_id
from shared.inbound.outbox import Delivery, deliver, due_outbox_ids
from shared.inbound.reminders import send_due_reminders
from shared.inbound.store import store_message
from shared.yclients.push import Pushed, push
from tests.support.conversation import NOW, message, salon_answering_at_once
from tests.support.processes import INBOUND_LISTS, running_worker, wait_for_idle, wait_until
from tests.support.seed import COMPANY, chat_message, seed_salon
from workers.app import app
from workers.producer import enqueue_message

OTHER = 962304  # a second salon whose session the same gateway holds
UNSERVED = 962305  # a salon the fleet serves, whose session the gateway does not hold
CHAT = "+79112345678"  # one client of both salons: the same phone writes to each
QUESTION = "Сколько стоит стрижка?"


@pytest.fixture
def gateway() -> Iterator[GatewayStandIn]:
    """The gateway stand-in holding both salons' sessions (this module's `inbound_env` points at it)."""
    with gateway_stand_in(companies=(COMPANY, OTHER)) as stand_in:
        yield stand_in


@pytest.fixture
def two_salons(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The seed salon and a second one answering in this process with no burst window."""
    with salon_answering_at_once():
        seed_salon(OTHER)
        yield db


class AcceptingYClients:
    """YClients as a CRM push meets it when the salon takes the booking: each create answered with a record."""

    def __init__(self) -> None:
        self.last_record = 9_600_000

    def write(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, int]:
        self.last_record += 1
        return {"id": self.last_record}


def booked_in(db: psycopg.Connection, company: int, starts_at: datetime) -> int:
    """The chat's client booked in `company` three days ago (so the reminder before the visit is due), the
    create on its way to YClients; returns that CRM operation."""
    client = ClientRepository().find_or_create_by_phone(company, CHAT)
    booking = BookingRepository().create(
        {
            "company_id": company,
            "client_id": client["id"],
            "staff_id": 2,
            "service_id": 201,
            "services": [{"id": 201, "title": "Маникюр с покрытием"}],
            "starts_at": starts_at,
            "ends_at": starts_at + timedelta(minutes=90),
            "status": "confirmed",
            "source": "assistant",
            "crm_state": "pending",
        }
    )
    db.execute("UPDATE bookings SET created_at = %s WHERE id = %s", (starts_at - timedelta(days=3), booking["id"]))
    return CrmOperationRepository().add(company, booking["id"], "create", chat_id=CHAT)


def notices_of(operation: int) -> list[int]:
    """The CRM push of `operation`, accepted by the salon: the outbox rows telling the client so."""
    pushed = push(operation, AcceptingYClients(), get_settings())  # type: ignore[arg-type]
    assert pushed.outcome is Pushed.DONE
    assert len(pushed.outbox_ids) == 1
    return pushed.outbox_ids


def assert_sent_from_own_number(db: psycopg.Connection, gateway: GatewayStandIn, company: int) -> None:
    """Everything the salon wrote to the chat (a reply, a reminder, a CRM notice) left from its number, in
    order, with the salon in its id; nothing else left from that number."""
    rows = db.execute(
        "SELECT idempotency_key, body FROM outbox WHERE company_id = %s ORDER BY id", (company,)
    ).fetchall()
    assert sorted(key.split(":")[0] for key, _ in rows) == ["crm", "reminder", "reply"]
    expected = [(gateway_id(company, key), body) for key, body in rows]
    assert [(d.id, d.message) for d in gateway.to(CHAT, company=company)] == expected
    assert all(d.id.startswith(f"{company}:") for d in gateway.deliveries if d.company == company)


def gateway_client(url: str) -> GatewayClient:
    return GatewayClient(get_settings().gateway.model_copy(update={"send_url": url}))


# ---- the stand-in: which salon sends is part of the request ------------------------------------------------
def test_the_gateway_stand_in_refuses_a_send_without_a_salon_or_for_one_it_holds_no_session_of() -> None:
    with gateway_stand_in() as stand_in:

        def post(**body: Any) -> httpx.Response:
            return httpx.post(stand_in.url, json={"phone": CHAT, "message": "Привет", **body}, timeout=5)

        without = post(id="reply:962302:1-1")  # the body as it was before salons were named
        assert without.status_code == 400
        assert "company_id is missing" in without.json()["error"]
        unknown = post(company_id=OTHER, id=f"{OTHER}:reply:1-1")
        assert unknown.status_code == 404
        assert unknown.json()["error"] == f"no WhatsApp session of company {OTHER} here"
        assert post(company_id=str(COMPANY), id=f"{COMPANY}:reply:1-1").status_code == 400
        assert post(company_id=COMPANY, id="reply:1-1").status_code == 400, "an id must name its salon"
        assert post(company_id=COMPANY, id=f"{COMPANY}:reply:1-1").status_code == 200
    assert [(d.company, d.id) for d in stand_in.deliveries] == [(COMPANY, f"{COMPANY}:reply:1-1")]
    assert [refusal.status for refusal in stand_in.refusals] == [400, 404, 400, 400]


def test_the_gateway_client_names_the_salon_and_reads_a_refusal_as_final_with_its_reason() -> None:
    with gateway_stand_in(companies=(COMPANY,)) as stand_in:
        client = GatewayClient(GatewaySettings(send_url=stand_in.url))
        try:
            client.send(company_id=COMPANY, phone=CHAT, message="Привет", key="reminder:7:before")
            with pytest.raises(GatewayError) as refused:
                client.send(company_id=OTHER, phone=CHAT, message="Привет", key="reminder:8:before")
        finally:
            client.close()
    assert [(d.company, d.id) for d in stand_in.deliveries] == [(COMPANY, f"{COMPANY}:reminder:7:before")]
    assert not refused.value.retryable
    assert refused.value.status == 404
    assert str(refused.value) == f"gateway refused the reply: 404 (no WhatsApp session of company {OTHER} here)"


# ---- in-process: a reply, a reminder and a CRM notice of each salon ----------------------------------------
def test_each_salons_reply_reminder_and_crm_notice_leave_from_its_own_number(
    two_salons: psycopg.Connection, gateway: GatewayStandIn
) -> None:
    settings = get_settings()
    client = gateway_client(gateway.url)
    written: list[int] = []
    try:
        for company in (COMPANY, OTHER):
            store_message(message(QUESTION, CHAT, company_id=company))
            written += drain_chat(company, CHAT, now=NOW).outbox_ids
            written += notices_of(booked_in(two_salons, company, NOW + timedelta(minutes=90)))
        written += send_due_reminders(settings, now=NOW)
        outcomes = [deliver(outbox_id, client, client.settings).status for outbox_id in written]
    finally:
        client.close()
    assert outcomes == [Delivery.SENT] * 6
    for company in (COMPANY, OTHER):
        assert_sent_from_own_number(two_salons, gateway, company)
    assert gateway.refusals == []
    assert gateway.repeats == 0


def test_a_reply_the_gateway_cannot_send_from_its_salon_is_given_up_at_once_with_the_reason(
    two_salons: psycopg.Connection,
) -> None:
    with gateway_stand_in() as seed_only:  # holds the seed salon's session only
        client = gateway_client(seed_only.url)
        try:
            store_message(message(QUESTION, CHAT, company_id=OTHER))
            (refused,) = drain_chat(OTHER, CHAT, now=NOW).outbox_ids
            outcome = deliver(refused, client, client.settings)
            store_message(message(QUESTION, CHAT))
            (served,) = drain_chat(COMPANY, CHAT, now=NOW).outbox_ids
            assert deliver(served, client, client.settings).status is Delivery.SENT, "another salon's goes on"
        finally:
            client.close()
    reason = f"gateway refused the reply: 404 (no WhatsApp session of company {OTHER} here)"
    assert outcome.status is Delivery.FAILED
    row = two_salons.execute("SELECT status, attempts, last_error FROM outbox WHERE id = %s", (refused,)).fetchone()
    assert row == ("failed", 1, reason), "given up at its first attempt, the gateway's reason kept"
    assert refused not in due_outbox_ids(), "never tried again"
    letters = two_salons.execute("SELECT source, company_id, reason FROM dead_letters").fetchall()
    assert letters == [("inbound.deliver", OTHER, f"reply not delivered after 1 attempts: {reason}")]
    assert [(d.company, d.phone) for d in seed_only.deliveries] == [(COMPANY, CHAT)]
    assert len(seed_only.refusals) == 1


def unserved_reply(db: psycopg.Connection) -> tuple[str | None, int, str | None]:
    """The unserved salon's reply: status, attempts and last error (nothing yet: no status)."""
    row = db.execute("SELECT status, attempts, last_error FROM outbox WHERE company_id = %s", (UNSERVED,)).fetchone()
    return row or (None, 0, None)


# ---- a real inbound worker ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_worker_sends_each_salons_messages_from_its_own_number_and_gives_up_a_refused_one_at_once(
    inbound_env: dict[str, str], gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    seed_salon(OTHER)
    seed_salon(UNSERVED)
    soon = datetime.now(UTC) + timedelta(hours=1)  # the reminder two hours before is due now
    operations = [booked_in(db, company, soon) for company in (COMPANY, OTHER)]
    with running_worker("inbound", inbound_env, tmp_path, concurrency=2) as worker:
        for company in (COMPANY, OTHER):
            enqueue_message(chat_message(company, CHAT, 1, QUESTION))
        wait_until(lambda: gateway.count() == 2, 30, f"both salons' replies\n{worker.output()[-3000:]}")
        app.send_task(TaskName.SEND_REMINDERS.value)  # beat's minute job
        wait_until(lambda: gateway.count() == 4, 30, f"both salons' reminders\n{worker.output()[-3000:]}")
        for operation in operations:
            for outbox_id in notices_of(operation):
                app.send_task(TaskName.DELIVER_REPLY.value, (outbox_id,))  # as the yclients worker hands them on
        wait_until(lambda: gateway.count() == 6, 30, f"both salons' CRM notices\n{worker.output()[-3000:]}")
        enqueue_message(chat_message(UNSERVED, CHAT, 1, QUESTION))
        wait_until(lambda: unserved_reply(db)[0] == "failed", 30, f"the refusal\n{worker.output()[-3000:]}")
        # Every task the worker received has ended and nothing waits: a retry of the refused reply would show.
        wait_for_idle([worker], inbound_env["REDIS_URL"], INBOUND_LISTS, at_least=9)
    for company in (COMPANY, OTHER):
        assert_sent_from_own_number(db, gateway, company)
    assert gateway.count() == 6
    assert gateway.repeats == 0
    assert [(r.status, r.body["company_id"]) for r in gateway.refusals] == [(404, UNSERVED)], "asked once, no retry"
    reason = f"gateway refused the reply: 404 (no WhatsApp session of company {UNSERVED} here)"
    assert unserved_reply(db) == ("failed", 1, reason), "given up at its first attempt, with the gateway's reason"
    letters = db.execute("SELECT source, company_id FROM dead_letters").fetchall()
    assert letters == [("inbound.deliver", UNSERVED)]
