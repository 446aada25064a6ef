"""What the client is told when something happens outside their own message: YClients accepted or refused a
booking, a move or a cancellation, or a visit is coming up. Shared by every assistant, so a plugged-in one
keeps the booking loop's wording and state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from shared.assistant import Reply
from shared.assistant.slots import FreeSlot
from shared.assistant.tools import SalonTools
from shared.assistant.understanding import Wish

MENU = (
    "Напишите цифру:\n1 — услуги и цены\n2 — записаться\n3 — мои записи\n4 — отменить запись\n5 — наши мастера"
    "\n6 — перенести запись"
)


def salon_name(company: dict[str, Any]) -> str:
    """The salon's name in quotes, once: "Лиса" and "Салон «Лиса»" both read as «Лиса»."""
    title = str(company.get("title") or "").strip()
    if title.lower().startswith("салон "):
        title = title[6:].strip()
    if not title:
        return "«салон красоты»"
    return title if title.startswith(("«", '"')) else f"«{title}»"


def _titles(booking: dict[str, Any]) -> str:
    return ", ".join(item.get("title", "") for item in booking.get("services") or []) or "визит"


def _when(tools: SalonTools, booking: dict[str, Any]) -> str:
    return f"{tools.local(booking['starts_at']):%d.%m в %H:%M}"


def describe(tools: SalonTools, booking: dict[str, Any]) -> str:
    """ "01.12 в 10:00 — Женская стрижка"."""
    return f"{_when(tools, booking)} — {_titles(booking)}"


def staff_name(tools: SalonTools, staff_id: int) -> str:
    return {s["id"]: s["name"] for s in tools.staff()}.get(staff_id, "мастер")


def offer_slots(
    tools: SalonTools,
    service_id: int,
    prefix: str,
    *,
    days: int,
    limit: int,
    exclude: tuple[int, datetime] | None = None,
    state: str = "choosing_slot",
    data: dict[str, Any] | None = None,
    wish: Wish | None = None,
    moving: int | None = None,
) -> Reply:
    """The earliest free slots of a service as a numbered list, and the state that reads the chosen number.
    `moving`: the booking these times are for (its own time is not taken);
    `exclude` leaves out one (staff, start) known to be taken although the local calendar does not know yet;
    `wish` keeps only the master, days and times the client asked for (the closest to a time asked for
    first), else says so and offers the nearest."""
    service = tools.service(service_id)
    if wish is not None and wish.last is not None:
        days = max(days, min((wish.last - tools.local(tools.now).date()).days + 1, 60))
    admits = wish.admits if wish is not None and wish.anything else None
    slots = _slots(tools, service_id, days, limit, exclude, admits, wish, moving)
    if admits is not None and not slots:
        slots = _slots(tools, service_id, days, limit, exclude, None, None, moving)
        if slots:
            prefix += "В это время свободных окон нет. Ближайшие свободные:\n"
    if service is None or not slots:
        return Reply(prefix + f"К сожалению, свободного времени на ближайшие {days} дней нет.\n\n{MENU}")
    lines = [
        f"{n}. {tools.local(slot.starts_at):%d.%m в %H:%M} — {staff_name(tools, slot.staff_id)}"
        for n, slot in enumerate(slots, 1)
    ]
    kept = {"wish": wish.as_data()} if wish is not None else {}
    return Reply(
        prefix + f"{service['title']}: свободное время\n" + "\n".join(lines) + "\n\nНапишите номер.",
        state,
        {
            **(data or {}),
            **kept,
            "service_id": service_id,
            "slots": [[s.staff_id, s.starts_at.isoformat()] for s in slots],
        },
    )


def visit(tools: SalonTools, booking: dict[str, Any]) -> str:
    """ "Женская стрижка, 01.12 в 10:00, мастер Анна"."""
    return f"{_titles(booking)}, {_when(tools, booking)}, мастер {staff_name(tools, booking['staff_id'])}"


def _slots(
    tools: SalonTools,
    service_id: int,
    days: int,
    limit: int,
    exclude: tuple[int, datetime] | None,
    admits: Callable[[int, datetime], bool] | None,
    wish: Wish | None,
    moving: int | None,
) -> list[FreeSlot]:
    if wish is not None and wish.at is not None:  # the closest to the time asked for, in time order
        found = tools.free_slots(service_id, days, 1000, admits, moving=moving)
        found = sorted(found, key=lambda slot: (wish.closeness(tools.local(slot.starts_at)), slot.starts_at))
        found = sorted(found[: limit + 1])
    else:
        found = tools.free_slots(service_id, days, limit + 1, admits, moving=moving)
    return [slot for slot in found if (slot.staff_id, slot.starts_at) != exclude][:limit]


def booked(tools: SalonTools, booking: dict[str, Any]) -> str:
    """Said when the booking is made; final only where the salon's calendar needs no confirmation."""
    what = visit(tools, booking)
    if booking.get("crm_state") == "pending":
        return f"Записываю вас: {what}. Подтвержу, как только салон примет запись."
    return f"Готово! Вы записаны: {what}. Ждём вас!"


def moved(tools: SalonTools, booking: dict[str, Any]) -> str:
    what = visit(tools, booking)
    if booking.get("yclients_id") is not None and tools.writes_to_crm:
        return f"Переношу запись: {what}. Подтвержу, как только салон примет перенос."
    return f"Готово! Запись перенесена: {what}. Ждём вас!"


def reminder(tools: SalonTools, booking: dict[str, Any], kind: str) -> Reply:
    when = "завтра" if kind == "evening" else "сегодня"
    text = f"Напоминаем: {when} у вас запись: {visit(tools, booking)}.\nОтветьте 1 — подтверждаю, 2 — отменить запись."
    return Reply(text, "reminder", {"booking_id": booking["id"]})


def crm_confirmed(tools: SalonTools, booking: dict[str, Any], kind: str) -> str:
    what = visit(tools, booking)
    if kind == "reschedule":
        return f"Готово! Салон подтвердил перенос: {what}. Ждём вас!"
    return f"Готово! Салон подтвердил запись: {what}. Ждём вас!"


def crm_slot_taken(
    tools: SalonTools, booking: dict[str, Any], *, days: int, limit: int, kept: dict[str, Any] | None = None
) -> Reply:
    """The salon's calendar refused the time (taken meanwhile, say through its widget): alternatives.
    `kept`: for a refused move, the booking as it stays (at its old time)."""
    taken = _when(tools, booking)
    if kept is not None:
        prefix = f"К сожалению, {taken} уже занято в салоне; ваша запись остаётся {describe(tools, kept)}. "
        data = {"booking_id": kept["id"]}
        state = "choosing_new_slot"
    else:
        prefix = f"К сожалению, {taken} только что заняли в салоне, запись не создана. "
        data, state = {}, "choosing_slot"
    if booking.get("service_id") is None:
        return Reply(prefix + "Напишите 2, чтобы выбрать другое время.")
    return offer_slots(
        tools,
        booking["service_id"],
        prefix,
        days=days,
        limit=limit,
        exclude=(booking["staff_id"], booking["starts_at"]),
        state=state,
        data=data,
    )


def _call_the_salon(tools: SalonTools) -> str:
    phone = str(tools.company.get("phone") or "").strip()
    return f"позвоните в салон: {phone}" if phone else "позвоните в салон"


def crm_failed(tools: SalonTools, booking: dict[str, Any], kind: str) -> str:
    """The fleet could not carry the change to the salon's calendar: what stands now, and what to do next.
    For a move, `booking` is the booking as it stays (back at its old time)."""
    what = describe(tools, booking)
    if kind == "create":
        return (
            f"Не удалось передать запись {what} в салон: запись не создана, и это время за вами не закреплено."
            f" Напишите 2, чтобы выбрать время снова, или {_call_the_salon(tools)}."
        )
    if kind == "reschedule":
        return (
            f"Не удалось перенести запись в салоне; ваша запись остаётся {what}."
            f" Напишите 6, чтобы выбрать другое время, или {_call_the_salon(tools)}."
        )
    if kind == "confirm":
        return f"Не удалось отметить в салоне, что вы придёте ({what}). Ваша запись остаётся в силе."
    return (
        f"Запись {what} отменена у нас, но салон пока не получил отмену: администратор отменит её в календаре"
        " салона, приходить не нужно."
    )


def crm_vanished(tools: SalonTools, booking: dict[str, Any]) -> str:
    """The record was deleted in the salon's calendar while the client's change was on its way there."""
    return (
        f"Записи {describe(tools, booking)} больше нет в календаре салона: её отменили в салоне."
        f" Напишите 2, чтобы записаться снова, или {_call_the_salon(tools)}."
    )
