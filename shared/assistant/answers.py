"""What the assistant says about the salon: prices, services, masters, hours, address and the like, and the
client's own bookings. Text only, from the salon's data; nothing here changes anything."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from shared.assistant.notices import describe, staff_name
from shared.assistant.tools import SalonTools
from shared.assistant.understanding import Understanding, Wish

WEEKDAY_NAMES = ["понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье"]
TOPIC_TITLES = {
    "address": "Адрес",
    "directions": "Как добраться",
    "hours": "Часы работы",
    "phone": "Телефон",
    "payment": "Оплата",
    "parking": "Парковка",
}


def rub(amount: Decimal | int | str) -> str:
    value = Decimal(str(amount))
    return f"{value:,.0f}".replace(",", " ") + " ₽"


def price(service: dict[str, Any]) -> str:
    low, high = Decimal(service["price_min"]), Decimal(service["price_max"])
    if high and high > low:
        return f"{rub(low)}–{rub(high)}"
    return f"от {rub(low)}" if low else "цена по запросу"


def price_line(service: dict[str, Any]) -> str:
    return f"• {service['title']} — {price(service)}, {service['duration_seconds'] // 60} мин"


def on_day(day: date, today: date) -> str:
    """ "сегодня (02.12)", "завтра (03.12)", "в пятницу 04.12"."""
    if day == today:
        return f"сегодня ({day:%d.%m})"
    if day == today + timedelta(days=1):
        return f"завтра ({day:%d.%m})"
    preposition = "во" if day.weekday() == 1 else "в"
    return f"{preposition} {WEEKDAY_NAMES[day.weekday()]} {day:%d.%m}"


def wish_text(tools: SalonTools, wish: Wish, today: date) -> str:
    """The wish as the client will recognise it: "в пятницу 04.12, после 18:00, мастер Елена"."""
    parts = []
    if wish.day is not None and wish.last_day is not None and wish.last_day != wish.day:
        parts.append(f"с {wish.day:%d.%m} по {wish.last_day:%d.%m}")
    elif wish.day is not None:
        parts.append(on_day(wish.day, today))
    if wish.at is not None:
        parts.append(f"около {wish.at:%H:%M}")
    elif wish.after is not None and wish.before is not None:
        parts.append(f"с {wish.after:%H:%M} до {wish.before:%H:%M}")
    elif wish.after is not None:
        parts.append(f"после {wish.after:%H:%M}")
    elif wish.before is not None:
        parts.append(f"до {wish.before:%H:%M}")
    if wish.staff_id is not None:
        parts.append(f"мастер {staff_name(tools, wish.staff_id)}")
    return ", ".join(parts)


def services_of(tools: SalonTools, ids: list[int]) -> list[dict[str, Any]]:
    by_id = {service["id"]: service for service in tools.services()}
    return [by_id[service_id] for service_id in ids if service_id in by_id]


def prices(tools: SalonTools, understood: Understanding) -> str:
    services = services_of(tools, understood.service_ids)
    lines = []
    if understood.missing_service:
        lines.append(f"«{understood.missing_service}» в нашем салоне не делают.")
    if services:
        lines += [price_line(service) for service in services]
    elif not understood.missing_service:
        return price_list(tools)
    return "\n".join(lines)


def price_list(tools: SalonTools) -> str:
    services = tools.services()
    if not services:
        return "Список услуг сейчас пуст. Пожалуйста, позвоните в салон."
    return "Наши услуги и цены:\n" + "\n".join(price_line(service) for service in services)


def services_answer(tools: SalonTools, understood: Understanding) -> str:
    services = services_of(tools, understood.service_ids)
    if services:
        return "Да, делаем:\n" + "\n".join(price_line(service) for service in services)
    if understood.missing_service:
        said = f"К сожалению, «{understood.missing_service}» в нашем салоне не делают."
        nearest = services_of(tools, list(understood.related_services))
        if nearest:
            return said + " Из похожих услуг есть:\n" + "\n".join(price_line(service) for service in nearest)
        return said + "\n\n" + price_list(tools)
    return price_list(tools)


def masters_answer(tools: SalonTools, understood: Understanding, today: date) -> str:
    staff = tools.staff()
    if not staff:
        return "Сейчас нет мастеров, доступных для записи."
    names = {member["id"]: member["name"] for member in staff}
    day = understood.when.day
    if understood.missing_master and understood.staff_id is None:
        nobody = f"Мастера по имени «{understood.missing_master.capitalize()}» в нашем салоне нет."
        rest = replace(understood, missing_master=None)
        return nobody + "\n" + masters_answer(tools, rest, today)
    if understood.staff_id is not None:
        member = next(m for m in staff if m["id"] == understood.staff_id)
        offered = services_of(tools, member["service_ids"] or [])
        text = f"{member['name']} работает у нас"
        text += ": " + ", ".join(s["title"] for s in offered) + "." if offered else "."
        if day is not None:
            hours = {staff_id: (start, end) for staff_id, start, end in tools.working_hours(day)}
            if member["id"] in hours:
                start, end = hours[member["id"]]
                text += f"\n{on_day(day, today).capitalize()} принимает с {start} до {end}."
            else:
                text += f"\n{on_day(day, today).capitalize()} не работает."
        else:
            week = [today + timedelta(days=n) for n in range(7)]
            days = [d for d in week if any(w[0] == member["id"] for w in tools.working_hours(d))]
            if days:
                text += "\nВ ближайшие дни принимает: " + ", ".join(f"{d:%d.%m}" for d in days) + "."
        return text + "\nЧтобы записаться, напишите, например: «запишите к ней на завтра»."
    if understood.service_ids:
        doing = [
            names[m["id"]] for m in staff if not m["service_ids"] or set(m["service_ids"]) & set(understood.service_ids)
        ]
        titles = ", ".join(s["title"] for s in services_of(tools, understood.service_ids))
        return f"{titles} — у нас делают: " + ", ".join(doing) + "." if doing else "Сейчас этих услуг никто не делает."
    if day is not None:
        working = [f"• {names[staff_id]}: {start}–{end}" for staff_id, start, end in tools.working_hours(day)]
        if not working:
            return f"{on_day(day, today).capitalize()} мастера не принимают."
        return f"{on_day(day, today).capitalize()} работают:\n" + "\n".join(working)
    lines = [f"• {m['name']}" + (f" — {m['specialization']}" if m.get("specialization") else "") for m in staff]
    return "Наши мастера:\n" + "\n".join(lines)


def my_bookings(tools: SalonTools, understood: Understanding | None = None) -> str:
    bookings = tools.upcoming_bookings()
    day = understood.when.day if understood is not None else None
    if day is not None:
        on_that_day = [b for b in bookings if tools.local(b["starts_at"]).date() == day]
        if not on_that_day and bookings:
            listed = "\n".join(f"• {describe(tools, b)}, мастер {staff_name(tools, b['staff_id'])}" for b in bookings)
            return f"На {day:%d.%m} у вас записи нет. Ваши записи:\n{listed}"
        bookings = on_that_day or bookings
    if not bookings:
        return "У вас нет предстоящих записей. Чтобы записаться, напишите, например: «запишите на маникюр в субботу»."
    lines = [f"• {describe(tools, b)}, мастер {staff_name(tools, b['staff_id'])}" for b in bookings]
    return "Ваши записи:\n" + "\n".join(lines)


def salon_info(tools: SalonTools, understood: Understanding, today: date) -> str:
    lines = []
    for topic in understood.topics or ("address", "hours", "phone"):
        if topic == "hours":
            lines.append(hours(tools, understood.when.day, today))
            continue
        said = tools.information(topic)
        if topic == "directions" and said is None and tools.information("address"):
            said = f"наш адрес: {tools.information('address')}"
        if said is None:
            phone = tools.information("phone")
            ask = (
                f" — уточните, пожалуйста, по телефону {phone}"
                if phone
                else " — уточните, пожалуйста, у администратора"
            )
            said = "этого я пока не знаю" + ask
        lines.append(f"{TOPIC_TITLES[topic]}: {said}")
    return "\n".join(lines)


def hours(tools: SalonTools, day: date | None, today: date) -> str:
    said = tools.information("hours")
    if day is None:
        if said:
            return f"Часы работы: {said}"
        day = today
    working = tools.working_hours(day)
    when = on_day(day, today)
    if working:
        start, end = min(w[1] for w in working), max(w[2] for w in working)
        text = f"{when.capitalize()} салон работает с {start} до {end}."
    elif day - today > timedelta(days=14):
        text = f"Расписание на {day:%d.%m} ещё не составлено."
    else:
        text = f"{when.capitalize()} мастера не принимают."
    return text + (f" Обычные часы работы: {said}" if said else "")
