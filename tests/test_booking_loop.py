"""The booking loop with YClients, end to end with real workers: what a client books, moves or cancels in the
chat reaches the salon's calendar (the YClients stand-in) exactly once; the calendar's refusals and changes
come back; reminders go out once each; webhooks bring the salon's own records in within seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ops.standins.gateway import GatewayStandIn
from ops.standins.yclients import YClientsStandIn
from tests.support.booking_loop import COMPANY
from tests.support.chat import CHAT, Chat, booking_of, post, records
from tests.support.processes import ROOT, running_worker, running_workers, wait_until
from workers.app import app

pytestmark = pytest.mark.slow


def test_book_move_and_cancel_in_the_chat_reach_the_salons_calendar(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    chat = Chat(gateway, db)
    slots = chat.choose_first_service()
    pending = chat.say("1")
    assert "Записываю вас" in pending
    assert "Подтвержу, как только салон примет запись" in pending
    chat.wait_for("Салон подтвердил запись")
    booking = booking_of(db)
    assert booking is not None
    assert (booking["crm"], booking["status"]) == ("synced", "confirmed")
    [record] = records(loop_stand_in, booking["id"])
    assert int(record["id"]) == booking["yclients_id"]
    assert (record["staff_id"], datetime.fromisoformat(record["datetime"])) == slots[0]

    chat.say("6")
    assert "Переносим запись" in chat.replies()[-1], "the client's only booking needs no choosing"
    new_staff, new_start = chat.offered()[1]
    assert "Переношу запись" in chat.say("2")
    chat.wait_for("Салон подтвердил перенос")
    [moved] = records(loop_stand_in, booking["id"])
    assert int(moved["id"]) == booking["yclients_id"], "a move must not create a second record"
    assert (moved["staff_id"], datetime.fromisoformat(moved["datetime"])) == (new_staff, new_start)

    assert "Отменить запись" in chat.say("4"), "a cancellation is asked back before it is sent"
    assert records(loop_stand_in, booking["id"]), "nothing is cancelled before the client says yes"
    assert "отменена" in chat.say("1")
    wait_until(lambda: not records(loop_stand_in, booking["id"]), 30, "the record deleted in YClients")
    # The delete reaches YClients a moment before its operation's row is closed: wait for the row too.
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) FROM crm_operations WHERE booking_id = %s AND status = 'done'", (booking["id"],)
            ).fetchone()[0]
            == 3
        ),
        30,
        "create, move and delete each done once",
    )
    assert len(loop_stand_in.calendar(COMPANY)) == 0


def test_a_create_that_times_out_after_the_salon_committed_leaves_exactly_one_record(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    loop_stand_in.stall_after_commit, loop_stand_in.stall_seconds = 1, 3.0  # the client gives up after 1 s
    chat = Chat(gateway, db)
    chat.choose_first_service()
    chat.say("1")
    chat.wait_for("Салон подтвердил запись")
    booking = booking_of(db)
    assert booking is not None
    assert len(records(loop_stand_in, booking["id"])) == 1
    assert len(loop_stand_in.calendar(COMPANY)) == 1
    attempts, status = db.execute(
        "SELECT attempts, status FROM crm_operations WHERE booking_id = %s AND kind = 'create'", (booking["id"],)
    ).fetchone()
    assert (attempts, status) == (2, "done"), "the second attempt found the record instead of creating another"
    assert booking["yclients_id"] == int(records(loop_stand_in, booking["id"])[0]["id"])


@pytest.mark.parametrize("as_success_false", [False, True], ids=["422 code 433", "200 success false"])
def test_a_slot_taken_in_the_widget_meanwhile_gives_alternatives_and_no_booking(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection, as_success_false: bool
) -> None:
    loop_stand_in.slot_taken_as_success_false = as_success_false
    chat = Chat(gateway, db)
    slots = chat.choose_first_service()
    staff_id, start = slots[0]
    service_id = db.execute(
        "SELECT (data->>'service_id')::bigint FROM dialog_contexts WHERE chat_id = %s", (CHAT,)
    ).fetchone()[0]
    widget = loop_stand_in.book_in_widget(COMPANY, staff_id, start, service_id, "+79995554433", "Из виджета")
    assert widget is not None
    chat.say("1")
    refusal = chat.wait_for("только что заняли в салоне")
    assert "Напишите номер" in refusal
    booking = booking_of(db)
    assert booking is not None
    assert (booking["status"], booking["crm"]) == ("cancelled", "refused"), "the local booking was not released"
    assert [int(r["id"]) for r in loop_stand_in.calendar(COMPANY)] == [widget]
    offered = chat.offered()
    assert (staff_id, start) not in offered, "the taken slot was offered again"
    # The client picks an alternative, and that one goes through.
    chat.say("1")
    chat.wait_for("Салон подтвердил запись")
    assert len(loop_stand_in.calendar(COMPANY)) == 2


def test_a_move_the_salon_refuses_puts_the_booking_back_and_offers_other_times(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    chat = Chat(gateway, db)
    booked_at = chat.choose_first_service()[0]
    chat.say("1")
    chat.wait_for("Салон подтвердил запись")
    booking = booking_of(db)
    assert booking is not None
    chat.say("6")
    # A time clear of the booking itself (a move may overlap its own old time; the widget could not book it).
    number, (staff_id, start) = next(
        (n, (s, t))
        for n, (s, t) in enumerate(chat.offered(), 1)
        if s != booked_at[0] or t >= booked_at[1] + timedelta(hours=2)
    )
    service_id = db.execute(
        "SELECT (data->>'service_id')::bigint FROM dialog_contexts WHERE chat_id = %s", (CHAT,)
    ).fetchone()[0]
    assert loop_stand_in.book_in_widget(COMPANY, staff_id, start, service_id, "+79995554400") is not None
    assert "Переношу запись" in chat.say(str(number))
    refusal = chat.wait_for("уже занято в салоне")
    assert "ваша запись остаётся" in refusal
    assert (staff_id, start) not in chat.offered()
    [record] = records(loop_stand_in, booking["id"])
    assert (record["staff_id"], datetime.fromisoformat(record["datetime"])) == booked_at, "YClients kept the old time"
    kept = booking_of(db)
    assert kept is not None
    assert (kept["staff_id"], kept["starts_at"]) == booked_at, "the local booking was not put back"


def test_reminders_are_sent_once_each_also_across_a_worker_restart_and_the_answer_confirms(
    loop_env: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    salon = loop_stand_in.salons[COMPANY]
    staff_id, service_id = int(salon.staff[0]["id"]), int(salon.services[0]["id"])
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=90)  # inside the 2-hour reminder
    record = loop_stand_in.book_in_widget(COMPANY, staff_id, start, service_id, CHAT, "Мария")
    client_id = db.execute(
        "INSERT INTO clients (company_id, name, phone) VALUES (%s, 'Мария', %s) RETURNING id", (COMPANY, CHAT)
    ).fetchone()[0]
    db.execute(
        "INSERT INTO bookings (company_id, yclients_id, client_id, staff_id, starts_at, ends_at, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, now() - interval '3 days')",
        (COMPANY, record, client_id, staff_id, start, start + timedelta(hours=1)),
    )
    for _ in range(2):
        with running_worker("inbound", loop_env, tmp_path):
            for _ in range(3):
                app.send_task("workers.inbound.send_reminders").get(timeout=30)
            wait_until(lambda: len(gateway.to(CHAT)) >= 1, 30, "the reminder at the gateway")
    reminders = [d.message for d in gateway.to(CHAT)]
    assert len(reminders) == 1, reminders
    assert "Напоминаем: сегодня у вас запись" in reminders[0]
    assert db.execute("SELECT kind FROM reminders").fetchall() == [("before",)], "the evening one is past"
    assert salon.records[record]["attendance"] == 0
    with loop_stand_in.lock:  # what the salon's administrator wrote on the record
        salon.records[record]["comment"] = "Постоянный клиент, скидка 10%"
        salon.records[record]["services"][0]["cost"] = "900.00"
    with running_workers(("inbound", "yclients"), loop_env, tmp_path):
        assert "Ждём вас" in Chat(gateway, db).say("Да")
        wait_until(lambda: salon.records[record]["attendance"] == 2, 30, "the visit confirmed in YClients")
    assert db.execute("SELECT answer FROM reminders").fetchone()[0] == "confirmed"
    assert salon.records[record]["comment"] == "Постоянный клиент, скидка 10%", "the confirmation overwrote the note"
    assert salon.records[record]["services"][0]["cost"] == "900.00"
    assert salon.records[record]["client"]["name"] == "Мария"


def test_a_record_made_in_the_salon_reaches_postgres_through_a_webhook_once(
    fleet: dict, loop_stand_in: YClientsStandIn, db: psycopg.Connection, webhook_url: str
) -> None:
    loop_stand_in.webhook_url = webhook_url
    staff_id = int(loop_stand_in.salons[COMPANY].staff[1]["id"])
    service_id = int(loop_stand_in.salons[COMPANY].services[0]["id"])
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=8, minute=0, second=0, microsecond=0)
    started = time.monotonic()
    record_id = loop_stand_in.book_in_widget(COMPANY, staff_id, start, service_id, "+79993332211", "Из виджета")
    wait_until(
        lambda: db.execute("SELECT 1 FROM bookings WHERE yclients_id = %s", (record_id,)).fetchone() is not None,
        20,
        "the widget's record in PostgreSQL",
    )
    print(f"\nwebhook to PostgreSQL: {time.monotonic() - started:.2f} s")
    event = json.dumps(loop_stand_in.webhooks_sent[-1], ensure_ascii=False).encode()
    wait_until(
        lambda: db.execute("SELECT count(*) FROM yclients_webhook_events WHERE status = 'pending'").fetchone()[0] == 0,
        20,
        "the event applied",
    )
    before = db.execute("SELECT count(*), max(xmin::text) FROM bookings").fetchone()
    done = "SELECT count(*) FROM yclients_webhook_events WHERE status = 'done'"
    applied = db.execute(done).fetchone()[0]
    status, answer = post(webhook_url, event)
    assert (status, answer) == (202, {"accepted": True}), "applied events fold nothing: a new read of the record"
    wait_until(
        lambda: db.execute(done).fetchone()[0] == applied + 1,
        20,
        "the second event applied",
    )
    assert db.execute("SELECT count(*), max(xmin::text) FROM bookings").fetchone() == before, "nothing changed"
    base = webhook_url.rsplit("/", 2)[0]
    assert post(base, event) == (403, {"error": "refused"})
    assert post(f"{base}/{COMPANY}/wrong-secret", event) == (403, {"error": "refused"})
    assert post(f"{webhook_url}?x=1", event) == (403, {"error": "refused"})
    assert post(webhook_url, b"[1, 2]") == (400, {"error": "refused"})

    loop_stand_in.cancel_in_widget(COMPANY, record_id)
    wait_until(
        lambda: db.execute("SELECT deleted_at FROM bookings WHERE yclients_id = %s", (record_id,)).fetchone()[0],
        20,
        "the deletion in PostgreSQL",
    )


def test_a_client_changed_in_the_salon_reaches_postgres_through_a_webhook(
    fleet: dict, loop_stand_in: YClientsStandIn, db: psycopg.Connection, webhook_url: str
) -> None:
    loop_stand_in.webhook_url = webhook_url
    salon = loop_stand_in.salons[COMPANY]
    salon.clients[5_100_001] = {"id": 5_100_001, "name": "Ольга", "phone": "+79990007766", "email": ""}
    loop_stand_in.client_changed(COMPANY, 5_100_001, name="Ольга Петрова")
    wait_until(
        lambda: db.execute("SELECT name FROM clients WHERE yclients_id = 5100001").fetchone() == ("Ольга Петрова",),
        20,
        "the client in PostgreSQL",
    )


@pytest.mark.parametrize(
    ("crm_state", "status"),
    [("failed", "cancelled"), ("pending", "confirmed")],
    ids=["freed when given up", "kept by an older fleet"],
)
def test_an_operator_lists_a_given_up_booking_and_retries_it_into_the_calendar(
    fleet: dict, loop_stand_in: YClientsStandIn, db: psycopg.Connection, loop_env: dict, crm_state: str, status: str
) -> None:
    staff_id = int(loop_stand_in.salons[COMPANY].staff[2]["id"])
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    client_id = db.execute(
        "INSERT INTO clients (company_id, name, phone) VALUES (%s, 'Ирина', '+79110003344') RETURNING id", (COMPANY,)
    ).fetchone()[0]
    booking = db.execute(
        "INSERT INTO bookings (company_id, client_id, staff_id, starts_at, ends_at, source, crm_state, status)"
        " VALUES (%s, %s, %s, %s, %s, 'assistant', %s, %s) RETURNING id",
        (COMPANY, client_id, staff_id, start, start + timedelta(hours=1), crm_state, status),
    ).fetchone()[0]
    operation = db.execute(
        "INSERT INTO crm_operations (company_id, booking_id, kind, status, attempts, last_error)"
        " VALUES (%s, %s, 'create', 'failed', 8, 'YClients was down all night') RETURNING id",
        (COMPANY, booking),
    ).fetchone()[0]

    def fleet_crm(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "workers.cli", "crm", *args]
        return subprocess.run(command, cwd=ROOT, env=loop_env, capture_output=True, text=True, timeout=60)

    listed = fleet_crm("--status", "failed")
    assert listed.returncode == 0, listed.stderr
    assert f"{operation:>6} create     failed" in listed.stdout
    assert "YClients was down all night" in listed.stdout
    assert fleet_crm("--retry", "999999").returncode == 1
    assert fleet_crm("--retry", str(operation)).returncode == 0
    wait_until(lambda: records(loop_stand_in, booking), 30, "the retried booking in the calendar")
    wait_until(
        lambda: db.execute("SELECT status FROM crm_operations WHERE id = %s", (operation,)).fetchone()[0] == "done",
        10,
        "the operation done",
    )
    assert db.execute("SELECT status, crm_state FROM bookings WHERE id = %s", (booking,)).fetchone() == (
        "confirmed",
        "synced",
    ), "the booking holds its time again, linked to its record"
    assert fleet_crm("--retry", str(operation)).returncode == 1, "a done operation is not retried"
