"""The salon's tools as the model sees them: functions with pydantic-checked arguments, run for this client
only, and refused back to the model whenever a call names something the tools did not offer.

Slots and bookings reach the model as references made in this turn (`S1`, `B1`), never as ids or times the
model could make up: a slot or booking it names that no tool returned is refused ("нет такого слота"), and so
is a service or master the salon does not have. Booking, moving and cancelling never act: they end the turn
with the fleet's own question, in the rule-based assistant's states ("Записать вас …? Напишите 1"), so the
client confirms in the chat and the rule-based assistant carries it out, exactly as when it offered the time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.assistant import Reply, answers, notices
from shared.assistant.handover import hand_over
from shared.assistant.tools import SalonTools

TIMES_OFFERED = 6


class Arguments(BaseModel):
    """A tool's arguments: nothing the tool does not take (an extra field is refused, never ignored)."""

    model_config = ConfigDict(extra="forbid")


class NoArguments(Arguments):
    pass


class FindFreeTimes(Arguments):
    service_id: int = Field(description="a service_id from list_services")
    date: str | None = Field(default=None, description="YYYY-MM-DD, a day the client asked for")
    staff_id: int | None = Field(default=None, description="a master's staff_id, when the client named one")
    booking: str | None = Field(default=None, description="B1…: times to move this booking to")


class Book(Arguments):
    slot: str = Field(description="S1…: a time find_free_times returned")


class Move(Arguments):
    booking: str = Field(description="B1…: a booking my_bookings returned")
    slot: str = Field(description="S1…: a time find_free_times returned for that booking")


class Cancel(Arguments):
    booking: str = Field(description="B1…: a booking my_bookings returned")


class SalonInfo(Arguments):
    topic: Literal["address", "phone", "hours", "about"]


class HandOver(Arguments):
    reason: str = Field(max_length=200, description="why a person should answer, in a few words")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: type[Arguments]
    ends_turn: bool = False

    def schema(self) -> dict[str, Any]:
        parameters = self.arguments.model_json_schema()
        parameters.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": parameters},
        }


TOOLS = (
    Tool("list_services", "Услуги салона с ценами и длительностью.", NoArguments),
    Tool("find_free_times", "Свободное время на услугу (ближайшие дни или один день).", FindFreeTimes),
    Tool("my_bookings", "Предстоящие записи этого клиента.", NoArguments),
    Tool("book", "Предложить клиенту записаться на найденное время; салон спросит подтверждение.", Book, True),
    Tool("move", "Предложить перенести запись клиента на найденное время; салон спросит подтверждение.", Move, True),
    Tool("cancel", "Предложить отменить запись клиента; салон спросит подтверждение.", Cancel, True),
    Tool("salon_info", "Адрес, телефон, часы работы или описание салона.", SalonInfo),
    Tool(
        "hand_over",
        "Передать чат администратору салона (жалоба, сложный вопрос, просьба позвать человека).",
        HandOver,
        True,
    ),
)
BY_NAME = {tool.name: tool for tool in TOOLS}


class Refused(Exception):
    """A call the tools will not run; its text goes back to the model as the tool's result."""


@dataclass(frozen=True)
class Slot:
    staff_id: int
    starts_at: datetime
    service_id: int
    booking_id: int | None  # the booking these times are for (a move), else None (a new booking)


@dataclass
class Toolbox:
    """One turn's tools for one client: what it offered (by reference), and what it counted."""

    tools: SalonTools
    days_ahead: int
    slots: dict[str, Slot] = field(default_factory=dict)
    bookings: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    refused: int = 0

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in TOOLS]

    def call(self, name: str, raw_arguments: str | None) -> tuple[str, Reply | None]:
        """Run one call: (the result for the model as JSON text, the turn's reply when the call ends it)."""
        self.calls += 1
        try:
            tool = BY_NAME.get(name)
            if tool is None:
                raise Refused(f"нет инструмента {name!r}; есть: {', '.join(BY_NAME)}")
            arguments = _arguments(tool, raw_arguments)
            run: Callable[[Any], dict[str, Any] | Reply] = getattr(self, f"_{name}")
            result = run(arguments)
        except Refused as exc:
            self.refused += 1
            return json.dumps({"error": str(exc)}, ensure_ascii=False), None
        if isinstance(result, Reply):
            return json.dumps({"done": "клиенту задан вопрос для подтверждения"}, ensure_ascii=False), result
        return json.dumps(result, ensure_ascii=False, default=str), None

    # ---- what only reads -----------------------------------------------------------------------------
    def _list_services(self, _: NoArguments) -> dict[str, Any]:
        return {
            "services": [
                {
                    "service_id": service["id"],
                    "title": service["title"],
                    "price": _price(service),
                    "minutes": int(service["duration_seconds"] // 60),
                }
                for service in self.tools.services()
            ]
        }

    def _find_free_times(self, arguments: FindFreeTimes) -> dict[str, Any]:
        if arguments.service_id not in {service["id"] for service in self.tools.services()}:
            raise Refused(f"нет услуги {arguments.service_id}: возьмите service_id из list_services")
        if arguments.staff_id is not None and arguments.staff_id not in {s["id"] for s in self.tools.staff()}:
            raise Refused(f"нет мастера {arguments.staff_id}")
        moving = self._booking(arguments.booking) if arguments.booking is not None else None
        today = self.tools.local(self.tools.now).date()
        day = _day(arguments.date, today, self.days_ahead) if arguments.date is not None else None

        def admits(staff_id: int, start: datetime) -> bool:
            return (day is None or start.date() == day) and arguments.staff_id in (None, staff_id)

        days = (day - today).days + 1 if day is not None else self.days_ahead
        found = self.tools.free_slots(arguments.service_id, days, TIMES_OFFERED, admits, moving=moving)
        times = []
        for slot in found:
            ref = f"S{len(self.slots) + 1}"
            self.slots[ref] = Slot(slot.staff_id, slot.starts_at, arguments.service_id, moving)
            times.append(
                {
                    "slot": ref,
                    "when": f"{self.tools.local(slot.starts_at):%d.%m в %H:%M}",
                    "master": notices.staff_name(self.tools, slot.staff_id),
                }
            )
        return {"times": times} if times else {"times": [], "note": "свободного времени нет"}

    def _my_bookings(self, _: NoArguments) -> dict[str, Any]:
        listed = []
        for booking in self.tools.upcoming_bookings():
            ref = f"B{len(self.bookings) + 1}"
            self.bookings[ref] = booking["id"]
            listed.append(
                {
                    "booking": ref,
                    "when": f"{self.tools.local(booking['starts_at']):%d.%m в %H:%M}",
                    "service": ", ".join(item.get("title", "") for item in booking.get("services") or []),
                    "service_id": booking.get("service_id"),
                    "master": notices.staff_name(self.tools, booking["staff_id"]),
                }
            )
        return {"bookings": listed}

    def _salon_info(self, arguments: SalonInfo) -> dict[str, Any]:
        today = self.tools.local(self.tools.now).date()
        if arguments.topic == "hours":
            return {"answer": answers.hours(self.tools, None, today)}
        if arguments.topic == "about":
            said = self.tools.information("about") or notices.salon_name(self.tools.company)
        else:
            said = self.tools.information(arguments.topic)
        return {"answer": said or "нет сведений"}

    # ---- what ends the turn with the fleet's own question --------------------------------------------
    def _book(self, arguments: Book) -> Reply:
        slot = self._slot(arguments.slot)
        if slot.booking_id is not None:
            raise Refused(f"{arguments.slot} найден для переноса записи, а не для новой")
        service = self.tools.service(slot.service_id) or {}
        what = notices.visit(
            self.tools,
            {"services": [{"title": service.get("title", "")}], "starts_at": slot.starts_at, "staff_id": slot.staff_id},
        )
        return Reply(
            f"Записать вас: {what}?\nНапишите 1, чтобы подтвердить запись.",
            "choosing_slot",
            {"service_id": slot.service_id, "slots": [[slot.staff_id, slot.starts_at.isoformat()]]},
        )

    def _move(self, arguments: Move) -> Reply:
        booking_id = self._booking(arguments.booking)
        slot = self._slot(arguments.slot)
        if slot.booking_id != booking_id:
            raise Refused(f"{arguments.slot} найден не для {arguments.booking}: вызовите find_free_times с booking")
        booking = self.tools.my_booking(booking_id)
        when = (
            f"{self.tools.local(slot.starts_at):%d.%m в %H:%M}, мастер {notices.staff_name(self.tools, slot.staff_id)}"
        )
        return Reply(
            f"Перенести запись {notices.visit(self.tools, booking)} на {when}?\nНапишите 1, чтобы перенести.",
            "choosing_new_slot",
            {
                "booking_id": booking_id,
                "service_id": slot.service_id,
                "slots": [[slot.staff_id, slot.starts_at.isoformat()]],
            },
        )

    def _cancel(self, arguments: Cancel) -> Reply:
        booking_id = self._booking(arguments.booking)
        booking = self.tools.my_booking(booking_id)
        return Reply(
            f"Отменить запись {notices.visit(self.tools, booking)}?\nНапишите 1 — да, отменить; 2 — нет, оставить.",
            "confirming_cancel",
            {"booking_id": booking_id, "from_reminder": False},
        )

    def _hand_over(self, arguments: HandOver) -> Reply:
        return hand_over(self.tools, self.tools.now, "просит администратора (помощник с моделью)")

    # ---- references ----------------------------------------------------------------------------------
    def _slot(self, ref: str) -> Slot:
        slot = self.slots.get(ref)
        if slot is None:
            raise Refused(f"нет такого времени {ref!r}: предлагайте только то, что вернул find_free_times")
        return slot

    def _booking(self, ref: str) -> int:
        booking_id = self.bookings.get(ref)
        if booking_id is None:
            raise Refused(f"нет такой записи {ref!r}: берите только то, что вернул my_bookings")
        try:
            self.tools.my_booking(booking_id)
        except LookupError:
            raise Refused(f"запись {ref} уже отменена или прошла") from None
        return booking_id


def _arguments(tool: Tool, raw: str | None) -> Arguments:
    try:
        decoded = json.loads(raw or "{}")
    except (ValueError, RecursionError):
        raise Refused(f"аргументы {tool.name} — не JSON") from None
    if not isinstance(decoded, dict):
        raise Refused(f"аргументы {tool.name} — не объект JSON")
    try:
        return tool.arguments.model_validate(decoded)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'аргументы'}: {e['msg']}" for e in exc.errors())
        raise Refused(f"аргументы {tool.name} не подходят: {problems}"[:300]) from None


def _day(text: str, today: date, days_ahead: int) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise Refused(f"дата {text!r} не в виде ГГГГ-ММ-ДД") from None
    if not today <= day < today + timedelta(days=days_ahead):
        raise Refused(f"запись открыта с {today:%d.%m} на {days_ahead} дней вперёд")
    return day


def _price(service: dict[str, Any]) -> str:
    low, high = service.get("price_min"), service.get("price_max")
    if low is None:
        return "цена у администратора"
    return f"{low:.0f} ₽" if high in (None, low) else f"{low:.0f}–{high:.0f} ₽"
