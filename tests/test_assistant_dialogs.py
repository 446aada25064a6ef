"""The assistant in conversation, in-process against a real database: what a client reads back, and what
happens (or, above all, does not happen) to the salon's calendar."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from ops.standins.telegram import TelegramStandIn
from shared.assistant.handover import hand_back
from shared.assistant.salon_settings import SalonSettingsError, apply_salon_file, apply_salon_settings
from shared.core.settings import get_settings
from shared.data.repositories.calendar import BookingRepository
from shared.data.repositories.people import ClientRepository
from shared.inbound.reminders import send_due_reminders
from tests.support.conversation import CHAT, NOW, answer, number_of, reply_body, say
from tests.support.seed import COMPANY


def booking_of_client(minutes_from_now: int = 90, staff: int = 2, service: int = 201) -> int:
    client = ClientRepository().find_or_create_by_phone(COMPANY, CHAT)
    start = NOW + timedelta(minutes=minutes_from_now)
    return BookingRepository().create(
        {
            "company_id": COMPANY,
            "client_id": client["id"],
            "staff_id": staff,
            "service_id": service,
            "services": [{"id": service, "title": "Маникюр с покрытием"}],
            "starts_at": start,
            "ends_at": start + timedelta(minutes=90),
            "status": "confirmed",
        }
    )["id"]


def status_of(db: psycopg.Connection, booking_id: int) -> tuple[str, str | None]:
    row = db.execute(
        "SELECT b.status, r.answer FROM bookings b LEFT JOIN reminders r ON r.booking_id = b.id WHERE b.id = %s",
        (booking_id,),
    ).fetchone()
    return row[0], row[1]


def remind(db: psycopg.Connection) -> int:
    booking_id = booking_of_client()
    db.execute("UPDATE bookings SET created_at = %s WHERE id = %s", (NOW - timedelta(days=3), booking_id))
    assert send_due_reminders(get_settings(), now=NOW), "the reminder was written"
    state = db.execute("SELECT state FROM dialog_contexts WHERE chat_id = %s", (CHAT,)).fetchone()[0]
    assert state == "reminder"
    return booking_id


# ---- a greeting, two requests, the missing piece -------------------------------------------------------
def test_a_greeting_never_hides_the_request_that_follows(answering_salon: psycopg.Connection) -> None:
    reply = say("Здравствуйте! Хочу записаться на маникюр завтра после 15")
    assert reply.startswith("Здравствуйте!")
    assert "Маникюр с покрытием: свободное время" in reply
    assert "1. 02.12 в 15:00 — Мария" in reply
    assert "Напишите цифру" not in reply, "the menu instead of the request"


def test_two_requests_in_one_message_are_both_answered_in_order(answering_salon: psycopg.Connection) -> None:
    reply = say("сколько стоит маникюр и можно записаться на завтра?")
    price = reply.index("Маникюр с покрытием — от 2 000 ₽, 90 мин")
    slots = reply.index("Маникюр с покрытием: свободное время")
    assert price < slots
    assert "02.12 в 10:00 — Мария" in reply


def test_a_missing_piece_is_asked_for_by_name(answering_salon: psycopg.Connection) -> None:
    reply = say("можно записаться на завтра?")
    assert reply.startswith("Выберите услугу (завтра (02.12)), напишите её номер:")
    assert "Напишите цифру" not in reply
    slots = say(number_of("Маникюр с покрытием", reply))
    assert "02.12 в 10:00 — Мария" in slots, "the day said before the service was chosen is kept"
    assert "01.12" not in slots


def test_a_service_or_master_the_salon_does_not_have_is_said_so_never_swapped(
    answering_salon: psycopg.Connection,
) -> None:
    lashes = say("хочу на наращивание ресниц")
    assert "«наращивание ресниц» в нашем салоне не делают" in lashes
    assert "Выберите услугу" in lashes
    assert "свободное время" not in lashes, "another service is offered as a choice, never swapped in"
    nobody = say("запишите к Оле на маникюр")
    assert "Мастера по имени «Оля» в нашем салоне нет." in nobody
    assert "Маникюр с покрытием: свободное время" in nobody


def test_a_master_who_does_not_do_the_service_is_replaced_and_said_so(answering_salon: psycopg.Connection) -> None:
    reply = say("можно к Анечке на маникюр с покрытием?")
    assert "Анна не делает: Маникюр с покрытием" in reply
    assert "— Мария" in reply


def test_a_time_said_in_words_picks_the_offered_time_and_only_that_books(answering_salon: psycopg.Connection) -> None:
    offers = say("маникюр завтра")
    assert "2. 02.12 в 10:30 — Мария" in offers
    assert answering_salon.execute("SELECT count(*) FROM bookings").fetchone()[0] == 0
    assert "Готово! Вы записаны: Маникюр с покрытием, 02.12 в 10:30, мастер Мария" in say("давайте на 10:30")
    assert answering_salon.execute("SELECT count(*) FROM bookings").fetchone()[0] == 1


def test_a_later_message_narrows_the_offered_times(answering_salon: psycopg.Connection) -> None:
    say("маникюр завтра")
    evening = say("а после 16 есть?")
    assert "1. 02.12 в 16:00 — Мария" in evening
    assert "02.12 в 10:00" not in evening
    assert answering_salon.execute("SELECT count(*) FROM bookings").fetchone()[0] == 0


# ---- cancelling and moving: asked back, understood ---------------------------------------------------
def test_a_cancellation_is_confirmed_in_the_chat_before_it_is_done(answering_salon: psycopg.Connection) -> None:
    booking_id = booking_of_client(minutes_from_now=60 * 25)
    question = say("отмените мою запись пожалуйста")
    assert "Отменить запись Маникюр с покрытием, 02.12 в 10:00, мастер Мария?" in question
    assert status_of(answering_salon, booking_id)[0] == "confirmed"
    assert "Хорошо, запись остаётся" in say("ой нет, не надо")
    assert status_of(answering_salon, booking_id)[0] == "confirmed"
    say("отмените запись")
    assert "отменена" in say("да, отменяйте")
    assert status_of(answering_salon, booking_id)[0] == "cancelled"


def test_a_move_by_half_an_hour_offers_that_time_with_the_same_master(answering_salon: psycopg.Connection) -> None:
    booking_id = booking_of_client(minutes_from_now=60 * 25 + 60)  # 02.12 at 11:00
    offers = say("перенесите на полчаса раньше")
    assert "Переносим запись 02.12 в 11:00 — Маникюр с покрытием" in offers
    assert "02.12 в 10:30 — Мария" in offers, "its own time does not block the move"
    row = BookingRepository().get({"id": booking_id})
    assert row["starts_at"] == NOW + timedelta(minutes=60 * 26), "nothing moves before a time is picked"
    assert "Готово! Запись перенесена" in say("давайте 10:30")
    assert BookingRepository().get({"id": booking_id})["starts_at"] == NOW + timedelta(minutes=60 * 25 + 30)


# ---- answers to a reminder -----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["не отменяйте, пожалуйста", "нет проблем, буду", "нет-нет, приду", "Да", "1"])
def test_a_client_who_confirms_keeps_the_visit(answering_salon: psycopg.Connection, text: str) -> None:
    booking_id = remind(answering_salon)
    assert "Спасибо! Ждём вас" in say(text)
    assert status_of(answering_salon, booking_id) == ("confirmed", "confirmed")


@pytest.mark.parametrize("text", ["не смогу", "2", "нет, отменяйте", "заболела, не приду"])
def test_a_client_who_cannot_come_is_asked_before_the_visit_is_cancelled(
    answering_salon: psycopg.Connection, text: str
) -> None:
    booking_id = remind(answering_salon)
    assert "Отменить запись Маникюр с покрытием" in say(text)
    assert status_of(answering_salon, booking_id) == ("confirmed", None)
    assert "отменена" in say("да")
    assert status_of(answering_salon, booking_id) == ("cancelled", "cancelled")


def test_a_move_asked_in_answer_to_a_reminder_offers_new_times(answering_salon: psycopg.Connection) -> None:
    booking_id = remind(answering_salon)
    offers = say("не смогу, давайте перенесём на пятницу")
    assert "Переносим запись" in offers
    assert "04.12 в 10:00 — Мария" in offers
    assert status_of(answering_salon, booking_id) == ("confirmed", None)


# ---- the salon itself ------------------------------------------------------------------------------------
def test_hours_come_from_the_schedules_and_the_rest_from_the_salons_settings(
    answering_salon: psycopg.Connection,
) -> None:
    assert "Завтра (02.12) салон работает с 10:00 до 18:00." in say("до скольки вы работаете завтра?")
    unknown = say("какой у вас адрес и есть ли парковка")
    assert "Адрес: этого я пока не знаю" in unknown
    apply_salon_settings(
        COMPANY,
        {"information": {"address": "ул. Лесная, 5", "parking": "во дворе, бесплатно"}},
    )
    known = say("какой у вас адрес и есть ли парковка")
    assert "Адрес: ул. Лесная, 5" in known
    assert "Парковка: во дворе, бесплатно" in known


def test_a_salons_own_words_name_its_services(answering_salon: psycopg.Connection, tmp_path: Path) -> None:
    assert "«френч» в нашем салоне не делают" in say("хочу френч")
    path = tmp_path / "salon.toml"
    path.write_text('[services]\n"френч" = ["Маникюр с покрытием"]\n[masters]\n"Машуня" = "Мария"\n', "utf-8")
    apply_salon_file(COMPANY, path)
    assert "Маникюр с покрытием: свободное время" in say("хочу френч к Машуне")
    path.write_text('[services]\n"френч" = ["Французский маникюр"]\n', "utf-8")
    with pytest.raises(SalonSettingsError, match="Французский маникюр"):
        apply_salon_file(COMPANY, path)
    assert "Маникюр с покрытием: свободное время" in say("хочу френч"), "a refused file changes nothing"


def test_masters_and_prices_in_words(answering_salon: psycopg.Connection) -> None:
    assert "Маникюр с покрытием — у нас делают: Мария." in say("кто у вас делает маникюр?")
    prices = say("прайс скиньте")
    assert "Наши услуги и цены" in prices
    assert "Мужская стрижка — от 900 ₽, 30 мин" in prices
    assert "Архивная услуга" not in prices


# ---- a person, off-topic, late -----------------------------------------------------------------------
def test_a_chat_handed_to_a_person_gets_no_automatic_answers_until_handed_back(
    telegram: TelegramStandIn, answering_salon: psycopg.Connection
) -> None:
    reply = say("позовите администратора")
    assert "Передаю ваш вопрос администратору салона" in reply
    alert = answering_salon.execute("SELECT kind, text FROM alerts").fetchone()
    assert alert[0] == "handover"
    assert "+7911*****78" in alert[1], "the chat is named, its number masked"
    assert CHAT not in alert[1]
    kept = answer("ау, вы тут?")
    assert kept.outbox_ids == []
    assert len(kept.held) == 1
    statuses = answering_salon.execute("SELECT body, status FROM messages ORDER BY id").fetchall()
    assert statuses[-1] == ("ау, вы тут?", "held")
    assert hand_back(COMPANY, CHAT)
    assert "Маникюр с покрытием — от 2 000 ₽" in say("сколько стоит маникюр?")


def test_off_topic_gets_one_polite_answer(answering_salon: psycopg.Connection) -> None:
    first = say("Заработок от 100 000 в месяц, пиши t.me/job")
    assert first.startswith("Я помощник салона «Лиса»")
    again = say("Заработок от 100 000 в месяц, пиши t.me/job")
    assert again == "Я отвечаю только на вопросы о записи и услугах салона. Напишите «меню», чтобы увидеть их."
    assert "Маникюр с покрытием — от 2 000 ₽" in say("сколько стоит маникюр?"), "a real question is answered"
    assert say("ахаха").startswith("Я помощник салона"), "off-topic after a real question is explained again"


def test_a_question_in_between_keeps_the_list_the_client_is_choosing_from(answering_salon: psycopg.Connection) -> None:
    say("маникюр завтра")
    assert "Маникюр с покрытием — от 2 000 ₽" in say("а сколько он стоит?")
    assert "Готово! Вы записаны: Маникюр с покрытием, 02.12 в 10:30" in say("2")


def test_a_client_running_late_is_thanked_and_the_salon_told(
    telegram: TelegramStandIn, answering_salon: psycopg.Connection
) -> None:
    booking_of_client()
    assert "Спасибо, что предупредили" in say("опаздываю минут на 10, пробки")
    kind, text = answering_salon.execute("SELECT kind, text FROM alerts").fetchone()
    assert kind == "late"
    assert "запись на 01.12 10:30" in text


def test_nothing_is_booked_cancelled_moved_or_confirmed_without_being_asked(
    answering_salon: psycopg.Connection,
) -> None:
    """A run of messages that mention bookings without asking to change one leaves the calendar alone."""
    booking_id = booking_of_client(minutes_from_now=60 * 25)
    for text in (
        "не отменяйте",
        "я записана на завтра?",
        "да",
        "1",
        "не могу дозвониться",
        "отмена отмены",
        "перенос? нет, не надо",
        "запись на маникюр у меня есть",
        "2",
    ):
        answer(text)
    assert status_of(answering_salon, booking_id)[0] == "confirmed"
    assert BookingRepository().get({"id": booking_id})["starts_at"] == NOW + timedelta(minutes=60 * 25)
    assert answering_salon.execute("SELECT count(*) FROM bookings").fetchone()[0] == 1
    replies = [reply_body(row[0]) for row in answering_salon.execute("SELECT id FROM outbox ORDER BY id").fetchall()]
    assert replies, "every message was answered"


def test_two_services_are_booked_one_after_the_other(answering_salon: psycopg.Connection) -> None:
    ask = say("запишите на стрижку и маникюр завтра")
    assert "Запишу по очереди: сначала эта услуга, потом Маникюр с покрытием." in ask
    say(number_of("Женская стрижка", ask))
    booked = say("1")
    assert "Готово! Вы записаны: Женская стрижка, 02.12 в 10:00, мастер Анна" in booked
    assert "Теперь следующая услуга. " in booked
    assert "Маникюр с покрытием: свободное время" in booked
    assert "1. 02.12 в 10:00 — Мария" in booked, "the day asked for holds for the second service too"
