"""One truth per booking, with real workers and the YClients stand-in: however YClients answers a chat's
booking, move or confirmation, the local calendar and the salon's end in agreement, the client hears the
outcome exactly once, and what the salon's administrators wrote on a record survives the fleet's updates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ops.standins.gateway import GatewayStandIn
from ops.standins.yclients import YClientsStandIn
from tests.support.booking_loop import COMPANY
from tests.support.chat import Chat, booking_of, records
from tests.support.processes import FleetProcess, running_workers, wait_until

pytestmark = pytest.mark.slow


def told(chat: Chat, fragment: str) -> int:
    """How many of the client's messages carry `fragment`."""
    return sum(fragment in reply for reply in chat.replies())


def operation(db: psycopg.Connection, booking_id: int, kind: str) -> dict[str, Any]:
    row = db.execute(
        "SELECT status, attempts, outcome, last_error FROM crm_operations WHERE booking_id = %s AND kind = %s",
        (booking_id, kind),
    ).fetchone()
    return dict(zip(("status", "attempts", "outcome", "last_error"), row, strict=True))


def settled(seconds: float = 1.5) -> None:
    """Time for a second message to arrive, if the fleet were to send one."""
    time.sleep(seconds)


@pytest.fixture
def impatient_fleet(loop_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, FleetProcess]]:
    """Workers that give a CRM operation up after three quick attempts."""
    env = {
        **loop_env,
        "FLEET_YCLIENTS__PUSH_MAX_ATTEMPTS": "3",
        "FLEET_YCLIENTS__PUSH_RETRY_BASE_SECONDS": "0.3",
    }
    with running_workers(("inbound", "yclients"), env, tmp_path) as workers:
        yield workers


@pytest.fixture
def patient_fleet(loop_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, FleetProcess]]:
    """Workers whose second attempt at a CRM operation comes after a webhook has had time to arrive."""
    env = {**loop_env, "FLEET_YCLIENTS__PUSH_RETRY_BASE_SECONDS": "4"}
    with running_workers(("inbound", "yclients"), env, tmp_path) as workers:
        yield workers


def writes_down(method: str, path: str, query: dict, body: dict) -> tuple[int, dict] | None:
    """YClients answers every write with 503 (reads still work)."""
    if method != "GET":
        return 503, {"success": False, "data": None, "meta": {"message": "Service Unavailable"}}
    return None


def book_first_slot(chat: Chat) -> tuple[int, datetime]:
    slot = chat.choose_first_service()[0]
    assert "Записываю вас" in chat.say("1")
    return slot


def confirmed_booking(
    gateway: GatewayStandIn, db: psycopg.Connection
) -> tuple[Chat, dict[str, Any], tuple[int, datetime]]:
    """A client's booking the salon has confirmed: the chat, the booking row and its (staff, start)."""
    chat = Chat(gateway, db)
    slot = book_first_slot(chat)
    chat.wait_for("Салон подтвердил запись")
    booking = booking_of(db)
    assert booking is not None
    return chat, booking, slot


def test_a_create_given_up_frees_the_time_and_tells_the_client_once_what_to_do(
    impatient_fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    loop_stand_in.override = writes_down
    chat = Chat(gateway, db)
    slot = book_first_slot(chat)
    message = chat.wait_for("Не удалось передать запись")
    assert "запись не создана" in message
    assert "Напишите 2" in message
    booking = booking_of(db)
    assert booking is not None
    wait_until(lambda: operation(db, booking["id"], "create")["status"] == "failed", 10, "the create given up")
    assert (booking_of(db) or {}).get("status") == "cancelled", "the local booking still holds the time"
    assert (booking_of(db) or {}).get("crm") == "failed"
    assert loop_stand_in.calendar(COMPANY) == [], "YClients has nothing, and the fleet says so"
    letters = db.execute(
        "SELECT count(*) FROM dead_letters WHERE reference = %s",
        (f"crm_operation:{db.execute('SELECT id FROM crm_operations').fetchone()[0]}",),
    ).fetchone()[0]
    assert letters == 1, "the operator has the details"
    settled()
    assert told(chat, "Не удалось передать запись") == 1
    assert told(chat, "Салон подтвердил") == 0
    # The time is the client's to take again: it is offered, and booked when YClients is back.
    loop_stand_in.override = None
    assert slot in chat.choose_first_service(), "the freed time is not offered again"
    chat.say(str(chat.offered().index(slot) + 1))
    chat.wait_for("Салон подтвердил запись")
    assert len(loop_stand_in.calendar(COMPANY)) == 1


def test_a_create_whose_webhook_links_it_before_the_retry_is_confirmed_to_the_client_once(
    patient_fleet: dict,
    loop_stand_in: YClientsStandIn,
    gateway: GatewayStandIn,
    db: psycopg.Connection,
    webhook_url: str,
) -> None:
    loop_stand_in.webhook_url = webhook_url
    loop_stand_in.fail_after_commit = 1  # the record is made, its webhook sent, and the create answers 500
    chat = Chat(gateway, db)
    book_first_slot(chat)
    chat.wait_for("Салон подтвердил запись", timeout=30)
    booking = booking_of(db)
    assert booking is not None
    create = operation(db, booking["id"], "create")
    assert create["status"] == "done"
    assert "linked already" in create["outcome"], "the webhook did not link the record before the retry"
    [record] = records(loop_stand_in, booking["id"])
    assert booking["yclients_id"] == int(record["id"])
    settled()
    assert told(chat, "Салон подтвердил запись") == 1


def test_a_move_of_a_record_deleted_in_the_salon_ends_the_booking_and_says_so_once(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    chat, booking, _ = confirmed_booking(gateway, db)
    loop_stand_in.cancel_in_widget(COMPANY, booking["yclients_id"])  # no webhook reaches the fleet
    chat.say("6")
    assert "Переношу запись" in chat.say("2")
    message = chat.wait_for("больше нет в календаре салона")
    assert "Напишите 2" in message
    ended = booking_of(db)
    assert ended is not None
    assert (ended["status"], ended["crm"]) == ("cancelled", "vanished"), "the booking points at a deleted record"
    assert loop_stand_in.calendar(COMPANY) == [], "the move must not bring the record back"
    settled()
    assert told(chat, "больше нет в календаре салона") == 1
    assert told(chat, "Салон подтвердил перенос") == 0
    assert told(chat, "Не удалось") == 0


def test_a_move_keeps_what_the_salon_wrote_on_the_record(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    chat, booking, _ = confirmed_booking(gateway, db)
    record = loop_stand_in.salons[COMPANY].records[booking["yclients_id"]]
    with loop_stand_in.lock:  # an administrator's edits in YClients
        record["comment"] = "Аллергия на лак с формальдегидом; цена согласована"
        record["services"][0]["cost"] = "1000.00"
        record["services"][0]["discount"] = 20
        record["client"]["name"] = "Мария Ивановна"
        record["attendance"] = 2
    chat.say("6")
    new_staff, new_start = chat.offered()[1]
    assert "Переношу запись" in chat.say("2")
    chat.wait_for("Салон подтвердил перенос")
    [moved] = records(loop_stand_in, booking["id"])
    assert (int(moved["staff_id"]), datetime.fromisoformat(moved["datetime"])) == (new_staff, new_start)
    assert moved["comment"] == "Аллергия на лак с формальдегидом; цена согласована"
    assert (moved["services"][0]["cost"], moved["services"][0]["discount"]) == ("1000.00", 20)
    assert moved["client"]["name"] == "Мария Ивановна"
    assert moved["attendance"] == 2
    assert told(chat, "Салон подтвердил перенос") == 1


def test_a_move_given_up_puts_the_booking_back_where_the_salon_has_it(
    impatient_fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    chat, booking, booked_at = confirmed_booking(gateway, db)
    loop_stand_in.override = writes_down
    chat.say("6")
    assert "Переношу запись" in chat.say("2")
    message = chat.wait_for("Не удалось перенести запись")
    assert "остаётся" in message
    assert "Напишите 6" in message
    kept = booking_of(db)
    assert kept is not None
    assert (kept["staff_id"], kept["starts_at"], kept["status"]) == (*booked_at, "confirmed")
    [record] = records(loop_stand_in, booking["id"])
    assert (int(record["staff_id"]), datetime.fromisoformat(record["datetime"])) == booked_at
    settled()
    assert told(chat, "Не удалось перенести запись") == 1


def test_a_record_the_salon_shows_as_deleted_is_never_written_back(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    chat, booking, _ = confirmed_booking(gateway, db)
    path = f"/record/{COMPANY}/{booking['yclients_id']}"

    def shown_deleted(method: str, asked: str, query: dict, body: dict) -> tuple[int, dict] | None:
        if method == "GET" and asked == path:  # YClients answers the read with the record marked deleted
            row = dict(loop_stand_in.salons[COMPANY].records[booking["yclients_id"]], deleted="1")
            return 200, {"success": True, "data": row, "meta": []}
        return None

    loop_stand_in.override = shown_deleted
    chat.say("6")
    assert "Переношу запись" in chat.say("2")
    chat.wait_for("больше нет в календаре салона")
    asked_for_it = [asked for _, asked, _ in loop_stand_in.requests if asked == path]
    assert len(asked_for_it) == 1, "only the read: an update would bring the deleted visit back"
    assert (booking_of(db) or {}).get("crm") == "vanished"
    settled()
    assert told(chat, "больше нет в календаре салона") == 1


def test_a_cancellation_answered_with_record_not_found_is_done_without_alarming_the_client(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    chat, booking, _ = confirmed_booking(gateway, db)
    loop_stand_in.override = lambda method, path, query, body: (
        (200, {"success": False, "data": None, "meta": {"message": "Запись не найдена"}})
        if method == "DELETE"
        else None
    )
    assert "Отменить запись" in chat.say("4")
    assert "отменена" in chat.say("1")
    wait_until(lambda: operation(db, booking["id"], "cancel")["status"] != "pending", 30, "the cancel carried out")
    cancel = operation(db, booking["id"], "cancel")
    assert (cancel["status"], cancel["outcome"]) == ("done", f"record {booking['yclients_id']} was gone already")
    settled()
    assert told(chat, "салон пока не получил отмену") == 0
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0


def test_a_create_answered_as_the_booking_endpoint_answers_is_linked_at_once(
    fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    loop_stand_in.create_answers_as_list = True  # [{id: 1, record_id, record_hash}]
    _, booking, _ = confirmed_booking(gateway, db)
    [record] = records(loop_stand_in, booking["id"])
    assert booking["yclients_id"] == int(record["id"]), "linked to the appointment's number, not the record"
    assert operation(db, booking["id"], "create")["attempts"] == 1


def test_a_move_answered_success_with_the_record_unchanged_is_not_told_as_done(
    impatient_fleet: dict, loop_stand_in: YClientsStandIn, gateway: GatewayStandIn, db: psycopg.Connection
) -> None:
    chat, booking, booked_at = confirmed_booking(gateway, db)
    loop_stand_in.updates_ignored = 1  # the first try is ignored; the second, after reading again, goes through
    chat.say("6")
    new_staff, new_start = chat.offered()[1]
    assert "Переношу запись" in chat.say("2")
    chat.wait_for("Салон подтвердил перенос")
    [moved] = records(loop_stand_in, booking["id"])
    assert (int(moved["staff_id"]), datetime.fromisoformat(moved["datetime"])) == (new_staff, new_start)
    assert operation(db, booking["id"], "reschedule")["attempts"] == 2
    loop_stand_in.updates_ignored = 10  # now YClients never takes the change: the client hears it stays
    chat.say("6")
    assert "Переношу запись" in chat.say("1")
    chat.wait_for("Не удалось перенести запись")
    kept = booking_of(db)
    assert kept is not None
    assert (kept["staff_id"], kept["starts_at"]) == (new_staff, new_start), "not put back where YClients has it"
    assert booked_at != (new_staff, new_start)
    settled()
    assert told(chat, "Салон подтвердил перенос") == 1
