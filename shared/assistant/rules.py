"""The built-in booking assistant: a small state machine over the salon's own data, in Russian.

States: idle → choosing_service → choosing_slot → idle (booked); idle → cancelling → idle;
idle → rescheduling → choosing_new_slot → idle (moved); reminder → idle (the visit confirmed or cancelled).
A digit or a keyword picks the action; "меню" returns to the start from anywhere.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.assistant import Reply, Turn, notices
from shared.assistant.notices import MENU, describe, offer_slots
from shared.assistant.tools import SalonTools
from shared.assistant.understanding import Wish, understand
from shared.core.settings import get_settings
from shared.data.repositories.calendar import SlotTakenError

KEYWORDS: list[tuple[str, re.Pattern[str]]] = [
    ("menu", re.compile(r"\b(меню|начало|старт|привет|здравствуй\w*|добрый)\b")),
    ("my_bookings", re.compile(r"\bмои\s+запис|\bкогда\s+я\b")),
    ("cancel", re.compile(r"\bотмен")),
    ("reschedule", re.compile(r"\bперен[её]с|\bперенест|\bдругое\s+время|\bпоменять\s+время")),
    ("book", re.compile(r"\bзапиш|\bзапис")),
    ("services", re.compile(r"\bуслуг|\bцен|\bпрайс|\bстоит|\bстоимост")),
    ("staff", re.compile(r"\bмастер|\bсотрудник")),
]
MENU_DIGITS = {"1": "services", "2": "book", "3": "my_bookings", "4": "cancel", "5": "staff", "6": "reschedule"}
YES = re.compile(r"^\s*(1|да|подтвержда\w*|приду|буду|ок|хорошо)\b")
NO = re.compile(r"^\s*(2|нет|не\s+приду|не\s+смогу)\b|\bотмен")
NUMBER = re.compile(r"^\s*(\d{1,3})\s*[.)]?\s*$")


def _intent(text: str) -> str | None:
    lowered = text.lower().replace("ё", "е")
    for name, pattern in KEYWORDS:
        if pattern.search(lowered):
            return name
    return None


def _picked(turn: Turn, key: str, number: int) -> tuple[Any, Reply | None]:
    """The option the number names from the list the last reply offered, or the reply asking again."""
    options: list[Any] = turn.data.get(key, [])
    if not 1 <= number <= len(options):
        return None, Reply(f"Пожалуйста, выберите номер от 1 до {len(options)}.", turn.state, turn.data)
    return options[number - 1], None


def _number(text: str) -> int | None:
    match = NUMBER.match(text)
    return int(match.group(1)) if match else None


def _rub(amount: Decimal | int | str) -> str:
    value = Decimal(str(amount))
    return f"{value:,.0f}".replace(",", " ") + " ₽"


def _price(service: dict[str, Any]) -> str:
    low, high = Decimal(service["price_min"]), Decimal(service["price_max"])
    if high and high > low:
        return f"{_rub(low)}–{_rub(high)}"
    return f"от {_rub(low)}" if low else "цена по запросу"


def _minutes(service: dict[str, Any]) -> str:
    return f"{service['duration_seconds'] // 60} мин"


class RuleBasedAssistant:
    """Answers from the salon's services, staff, schedules and bookings; no network needed."""

    def __init__(self) -> None:
        inbound = get_settings().inbound
        self.days_ahead = inbound.slot_days_ahead
        self.slots_offered = inbound.slots_offered

    def reply(self, turn: Turn, tools: SalonTools) -> Reply:
        text = turn.text.strip()
        if not text:
            note = "Спасибо за вложение! Я пока понимаю только текст."
            return Reply(f"{note}\n\n{MENU}", turn.state, turn.data)
        intent = _intent(text)
        number = _number(text)
        if intent == "menu":
            return self._menu(turn)
        if turn.state == "reminder":
            answer = self._reminder_answer(turn, tools, text)
            if answer is not None:
                return answer
        if turn.state == "choosing_service" and number is not None:
            return self._service_chosen(turn, tools, number)
        if turn.state == "choosing_slot" and number is not None:
            return self._slot_chosen(turn, tools, number)
        if turn.state == "cancelling" and number is not None:
            return self._cancel_chosen(turn, tools, number)
        if turn.state == "rescheduling" and number is not None:
            return self._reschedule_chosen(turn, tools, number)
        if turn.state == "choosing_new_slot" and number is not None:
            return self._new_slot_chosen(turn, tools, number)
        if intent is None and number is not None and turn.state == "idle":
            intent = MENU_DIGITS.get(str(number))
        if number is None and intent in (None, "book", "services", "staff"):
            understood = self._understood(turn, tools, text, intent)
            if understood is not None:
                return understood
        handlers = {
            "services": self._services,
            "book": self._start_booking,
            "my_bookings": self._my_bookings,
            "cancel": self._start_cancel,
            "reschedule": self._start_reschedule,
            "staff": self._staff,
        }
        if intent in handlers:
            return handlers[intent](turn, tools)
        return Reply(f"Извините, я не понял сообщение.\n\n{MENU}")

    # ---- the client's own words ---------------------------------------------------------------------
    def _understood(self, turn: Turn, tools: SalonTools, text: str, intent: str | None) -> Reply | None:
        """A booking or a price question in the client's words; None leaves the message to the menu."""
        wish = understand(text, tools.services(), tools.staff(), tools.local(tools.now).date())
        if intent == "services" and wish.service_ids:
            return self._prices(tools, wish.service_ids)
        if intent == "book" or (intent is None and wish.anything):
            return self._book_wish(tools, wish)
        if intent == "staff" and (wish.day or wish.after or wish.before or wish.service_ids):
            return self._book_wish(tools, wish)
        return None

    def _prices(self, tools: SalonTools, service_ids: list[int]) -> Reply:
        services = [s for s in tools.services() if s["id"] in service_ids]
        lines = [f"• {s['title']} — {_price(s)}, {_minutes(s)}" for s in services]
        return Reply("\n".join(lines) + "\n\nЧтобы записаться, напишите 2 или, например, «запишите на завтра».")

    def _book_wish(self, tools: SalonTools, wish: Wish) -> Reply:
        if len(wish.service_ids) == 1:
            return self._offer_slots(tools, wish.service_ids[0], "", wish=wish)
        services = [s for s in tools.services() if not wish.service_ids or s["id"] in wish.service_ids]
        if wish.staff_id is not None and not wish.service_ids:
            member = next((m for m in tools.staff() if m["id"] == wish.staff_id), None)
            if member is not None and member["service_ids"]:
                services = [s for s in services if s["id"] in member["service_ids"]] or services
        if not services:
            return Reply("Сейчас нет услуг, доступных для записи.")
        lines = [f"{n}. {s['title']} — {_price(s)}" for n, s in enumerate(services, 1)]
        return Reply(
            "Выберите услугу, напишите её номер:\n" + "\n".join(lines),
            "choosing_service",
            {"services": [s["id"] for s in services], "wish": wish.as_data()},
        )

    # ---- menu and catalogue ------------------------------------------------------------------------
    def _menu(self, turn: Turn) -> Reply:
        name = turn.client.get("name")
        greeting = f"Здравствуйте, {name}!" if name else "Здравствуйте!"
        return Reply(f"{greeting} Я помощник салона «{turn.company['title']}».\n\n{MENU}")

    def _services(self, turn: Turn, tools: SalonTools) -> Reply:
        services = tools.services()
        if not services:
            return Reply("Список услуг сейчас пуст. Пожалуйста, позвоните в салон.")
        lines = [f"• {s['title']} — {_price(s)}, {_minutes(s)}" for s in services]
        return Reply("Наши услуги:\n" + "\n".join(lines) + "\n\nЧтобы записаться, напишите 2.")

    def _staff(self, turn: Turn, tools: SalonTools) -> Reply:
        staff = tools.staff()
        if not staff:
            return Reply("Сейчас нет мастеров, доступных для записи.")
        lines = [f"• {s['name']}" + (f" — {s['specialization']}" if s.get("specialization") else "") for s in staff]
        return Reply("Наши мастера:\n" + "\n".join(lines))

    # ---- booking -----------------------------------------------------------------------------------
    def _start_booking(self, turn: Turn, tools: SalonTools) -> Reply:
        return self._book_wish(tools, Wish())

    def _service_chosen(self, turn: Turn, tools: SalonTools, number: int) -> Reply:
        service_id, again = _picked(turn, "services", number)
        if again is not None:
            return again
        return self._offer_slots(tools, service_id, prefix="", wish=Wish.from_data(turn.data))

    def _offer_slots(self, tools: SalonTools, service_id: int, prefix: str, **state: Any) -> Reply:
        return offer_slots(tools, service_id, prefix, days=self.days_ahead, limit=self.slots_offered, **state)

    def _slot_chosen(self, turn: Turn, tools: SalonTools, number: int) -> Reply:
        slot, again = _picked(turn, "slots", number)
        if again is not None:
            return again
        staff_id, starts = slot
        service_id = turn.data["service_id"]
        starts_at = datetime.fromisoformat(starts)
        if starts_at < tools.now + timedelta(minutes=5):
            return self._offer_slots(tools, service_id, prefix="Это время уже прошло. ")
        try:
            booking = tools.book(service_id, staff_id, starts_at)
        except SlotTakenError:
            return self._offer_slots(tools, service_id, prefix="Это время только что заняли. ")
        except LookupError:
            return Reply(f"Эта услуга больше недоступна.\n\n{MENU}")
        return Reply(notices.booked(tools, booking))

    # ---- the client's bookings ---------------------------------------------------------------------
    def _my_bookings(self, turn: Turn, tools: SalonTools) -> Reply:
        bookings = tools.upcoming_bookings()
        if not bookings:
            return Reply("У вас нет предстоящих записей. Чтобы записаться, напишите 2.")
        return Reply("Ваши записи:\n" + "\n".join(f"• {describe(tools, b)}" for b in bookings))

    def _choose_booking(self, tools: SalonTools, question: str, state: str) -> Reply:
        bookings = tools.upcoming_bookings()
        if not bookings:
            return Reply("У вас нет предстоящих записей. Чтобы записаться, напишите 2.")
        lines = [f"{n}. {describe(tools, b)}" for n, b in enumerate(bookings, 1)]
        return Reply(
            f"{question} Напишите номер:\n" + "\n".join(lines), state, {"bookings": [b["id"] for b in bookings]}
        )

    def _start_cancel(self, turn: Turn, tools: SalonTools) -> Reply:
        return self._choose_booking(tools, "Какую запись отменить?", "cancelling")

    def _cancel_chosen(self, turn: Turn, tools: SalonTools, number: int) -> Reply:
        booking_id, again = _picked(turn, "bookings", number)
        if again is not None:
            return again
        try:
            booking = tools.cancel(booking_id)
        except LookupError:
            return Reply("Эта запись уже отменена или прошла.")
        return Reply(f"Запись {describe(tools, booking)} отменена.")

    # ---- moving a booking --------------------------------------------------------------------------
    def _start_reschedule(self, turn: Turn, tools: SalonTools) -> Reply:
        return self._choose_booking(tools, "Какую запись перенести?", "rescheduling")

    def _reschedule_chosen(self, turn: Turn, tools: SalonTools, number: int) -> Reply:
        booking_id, again = _picked(turn, "bookings", number)
        if again is not None:
            return again
        try:
            booking = tools.my_booking(booking_id)
        except LookupError:
            return Reply("Эта запись уже отменена или прошла.")
        if booking["service_id"] is None:
            return Reply("Эту запись я не могу перенести сам. Пожалуйста, позвоните в салон.")
        return self._offer_slots(
            tools,
            booking["service_id"],
            "Новое время для записи. ",
            state="choosing_new_slot",
            data={"booking_id": booking["id"]},
        )

    def _new_slot_chosen(self, turn: Turn, tools: SalonTools, number: int) -> Reply:
        slot, again = _picked(turn, "slots", number)
        if again is not None:
            return again
        staff_id, starts = slot
        booking_id, service_id = turn.data["booking_id"], turn.data["service_id"]
        again = {"state": "choosing_new_slot", "data": {"booking_id": booking_id}}
        if datetime.fromisoformat(starts) < tools.now + timedelta(minutes=5):
            return self._offer_slots(tools, service_id, "Это время уже прошло. ", **again)
        try:
            moved = tools.reschedule(booking_id, staff_id, datetime.fromisoformat(starts))
        except SlotTakenError:
            return self._offer_slots(tools, service_id, "Это время только что заняли. ", **again)
        except LookupError:
            return Reply("Эта запись уже отменена или прошла.")
        return Reply(notices.moved(tools, moved))

    # ---- the answer to a reminder ------------------------------------------------------------------
    def _reminder_answer(self, turn: Turn, tools: SalonTools, text: str) -> Reply | None:
        """ "Да" confirms the visit, "нет" or "отмените" cancels it (in YClients too); anything else is an
        ordinary message."""
        lowered = text.lower().replace("ё", "е")
        booking_id = turn.data.get("booking_id")
        if YES.search(lowered):
            tools.answer_reminder(booking_id, "confirmed")
            return Reply("Спасибо! Ждём вас.")
        if NO.search(lowered):
            try:
                booking = tools.cancel(booking_id)
            except LookupError:
                return Reply("Эта запись уже отменена или прошла.")
            tools.answer_reminder(booking_id, "cancelled")
            return Reply(f"Запись {describe(tools, booking)} отменена. Чтобы записаться снова, напишите 2.")
        return None
