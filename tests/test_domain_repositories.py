"""Domain repositories: clients by phone, catalogue queries, schedules, bookings that cannot overlap."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
import pytest

from shared.data.errors import ValidationFailedError
from shared.data.repositories.calendar import BookingRepository, SlotTakenError, StaffScheduleRepository
from shared.data.repositories.catalogue import ServiceRepository, StaffRepository
from shared.data.repositories.conversations import DialogContextRepository
from shared.data.repositories.people import ClientRepository
from tests.support.seed import COMPANY, MOSCOW_NOON, booking

clients = ClientRepository()
bookings = BookingRepository()


pytestmark = pytest.mark.usefixtures("salon")


@pytest.mark.parametrize("written", ["+7 911 234-56-78", "89112345678", "79112345678", 79112345678])
def test_find_by_phone_in_any_format(written: str | int) -> None:
    created = clients.insert({"company_id": COMPANY, "yclients_id": 1, "name": "Анна", "phone": "8 (911) 234 56 78"})
    assert created["phone"] == "+79112345678"
    assert clients.find_by_phone(COMPANY, written)["id"] == created["id"]


def test_find_by_phone_not_found_and_malformed() -> None:
    assert clients.find_by_phone(COMPANY, "+79110000000") is None
    with pytest.raises(ValidationFailedError) as caught:
        clients.find_by_phone(COMPANY, "12-34")
    assert caught.value.fields == ["phone"]
    assert "12-34" not in str(caught.value)


def test_search_by_name_escapes_wildcards() -> None:
    clients.insert({"company_id": COMPANY, "yclients_id": 1, "name": "Анна Иванова", "phone": "+79110000001"})
    clients.insert({"company_id": COMPANY, "yclients_id": 2, "name": "100% Анна", "phone": "+79110000002"})
    assert [row["name"] for row in clients.search_by_name(COMPANY, "иванова")] == ["Анна Иванова"]
    assert [row["name"] for row in clients.search_by_name(COMPANY, "100%")] == ["100% Анна"]


def test_a_clients_bookings() -> None:
    client = clients.insert({"company_id": COMPANY, "yclients_id": 1, "phone": "+79110000001"})
    first = bookings.create(booking(start=MOSCOW_NOON, client_id=client["id"]))
    second = bookings.create(booking(start=MOSCOW_NOON + timedelta(days=1), client_id=client["id"]))
    bookings.create(booking(start=MOSCOW_NOON + timedelta(days=2)))  # someone else's
    assert [row["id"] for row in bookings.for_client(client["id"])] == [first["id"], second["id"]]
    bookings.cancel(first["id"])
    assert [row["id"] for row in bookings.for_client(client["id"])] == [second["id"]]


def test_services_active_and_by_category() -> None:
    services = ServiceRepository()
    assert {row["id"] for row in services.active(COMPANY)} == {101, 102, 201}
    assert {row["id"] for row in services.by_category(COMPANY, 20)} == {201}


def test_bookable_staff_excludes_the_fired() -> None:
    assert [row["name"] for row in StaffRepository().bookable(COMPANY)] == ["Анна", "Мария"]


def test_schedule_slots_for_a_date_range() -> None:
    schedules = StaffScheduleRepository()
    start = date(2026, 12, 1)
    schedules.bulk_upsert(
        [
            {
                "company_id": COMPANY,
                "staff_id": 1,
                "date": start + timedelta(days=n),
                "slots": [{"from": "14:00", "to": "20:00"}, {"from": "10:00", "to": "13:00"}],
            }
            for n in range(5)
        ]
    )
    rows = schedules.for_staff(COMPANY, 1, start + timedelta(days=1), start + timedelta(days=3))
    assert [row["date"] for row in rows] == [start + timedelta(days=n) for n in (1, 2, 3)]
    assert rows[0]["slots"] == [{"from": "10:00", "to": "13:00"}, {"from": "14:00", "to": "20:00"}]


def test_schedule_rejects_nonsense_slots() -> None:
    with pytest.raises(ValidationFailedError) as caught:
        StaffScheduleRepository().insert(
            {
                "company_id": COMPANY,
                "staff_id": 1,
                "date": date(2026, 12, 1),
                "slots": [{"from": "10:00", "to": "12:00"}, {"from": "11:00", "to": "13:00"}],
            }
        )
    assert "overlap" in str(caught.value)
    with pytest.raises(ValidationFailedError, match="ends before it starts"):
        StaffScheduleRepository().insert(
            {
                "company_id": COMPANY,
                "staff_id": 1,
                "date": date(2026, 12, 1),
                "slots": [{"from": "18:00", "to": "09:00"}],
            }
        )


def test_double_booking_is_refused_by_the_database() -> None:
    bookings.create(booking(staff_id=1, start=MOSCOW_NOON, minutes=60))
    with pytest.raises(SlotTakenError):
        bookings.create(booking(staff_id=1, start=MOSCOW_NOON + timedelta(minutes=30), minutes=60))
    # Back to back is fine, so is another staff member at the same time.
    bookings.create(booking(staff_id=1, start=MOSCOW_NOON + timedelta(minutes=60)))
    bookings.create(booking(staff_id=2, start=MOSCOW_NOON))


def test_a_cancelled_booking_frees_its_slot_and_reschedule_respects_others() -> None:
    first = bookings.create(booking(staff_id=1, start=MOSCOW_NOON))
    bookings.cancel(first["id"])
    second = bookings.create(booking(staff_id=1, start=MOSCOW_NOON))
    later = bookings.create(booking(staff_id=1, start=MOSCOW_NOON + timedelta(hours=3)))
    with pytest.raises(SlotTakenError):
        bookings.reschedule(later["id"], MOSCOW_NOON + timedelta(minutes=30), MOSCOW_NOON + timedelta(minutes=90))
    moved = bookings.reschedule(later["id"], MOSCOW_NOON + timedelta(hours=5), MOSCOW_NOON + timedelta(hours=6))
    assert moved["starts_at"] == MOSCOW_NOON + timedelta(hours=5)
    assert second["status"] == "confirmed"


def test_booking_time_range_must_make_sense() -> None:
    with pytest.raises(ValidationFailedError, match="ends_at must be after starts_at"):
        bookings.create(booking(minutes=-30))
    with pytest.raises(ValidationFailedError) as caught:
        bookings.create({**booking(), "starts_at": MOSCOW_NOON.replace(tzinfo=None)})
    assert "starts_at" in caught.value.fields


def test_dialog_context_round_trip() -> None:
    contexts = DialogContextRepository()
    contexts.save(
        {"company_id": COMPANY, "chat_id": "+79110000001", "state": "choosing_service", "data": {"service_id": 101}}
    )
    contexts.save(
        {
            "company_id": COMPANY,
            "chat_id": "+79110000001",
            "state": "choosing_slot",
            "data": {"service_id": 101, "staff_id": 1},
        }
    )
    row = contexts.load(COMPANY, "+79110000001")
    assert row["state"] == "choosing_slot"
    assert row["data"] == {"service_id": 101, "staff_id": 1}


def test_messages_and_outbox_are_unique_where_redelivery_could_duplicate() -> None:
    from datetime import UTC, datetime

    from shared.data.errors import ConflictError
    from shared.data.repositories.conversations import MessageRepository, OutboxRepository

    messages = MessageRepository()
    message = {
        "company_id": COMPANY,
        "chat_id": "8 911 000-00-01",
        "gateway_message_id": "wamid.1",
        "chat_seq": 1,
        "body": "Здравствуйте",
        "sent_at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    stored = messages.insert(message)
    assert stored["chat_id"] == "+79110000001"
    with pytest.raises(ConflictError):
        messages.insert({**message, "chat_seq": 2})
    outbox = OutboxRepository()
    reply = {
        "company_id": COMPANY,
        "chat_id": "+79110000001",
        "idempotency_key": "reply-1",
        "body": "Добрый день",
        "message_ids": [stored["id"]],
    }
    first = outbox.upsert(reply)
    assert outbox.upsert(reply)["id"] == first["id"]
    with pytest.raises(ValidationFailedError) as caught:
        messages.insert({**message, "gateway_message_id": " ", "chat_id": "abc", "sent_at": "2026-12-01T10:00"})
    assert set(caught.value.fields) == {"gateway_message_id", "chat_id", "sent_at"}


def test_whatsapp_tables_read_in_the_gateways_layout(salon: psycopg.Connection) -> None:
    from shared.data.repositories.whatsapp import WhatsAppAuthRepository, WhatsAppKeysRepository

    salon.execute("INSERT INTO whatsapp_auth (company_id, creds) VALUES ('company_962302', '{\"me\": {}}')")
    salon.execute(
        "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value) VALUES"
        " ('company_962302', 'pre-key', '1', '{}'), ('company_962302', 'session', 'a.0', '{}')"
    )
    assert WhatsAppAuthRepository().for_company("company_962302")["creds"] == {"me": {}}
    assert WhatsAppAuthRepository().for_company("company_1") is None
    keys = WhatsAppKeysRepository()
    assert [row["key_type"] for row in keys.find_many({"company_id": "company_962302"}, order_by=["key_type"])] == [
        "pre-key",
        "session",
    ]
    assert keys.delete({"company_id": "company_962302", "key_type": "session"}) == 1
