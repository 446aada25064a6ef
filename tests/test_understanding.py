"""The client's own words: service, master, day and time window recognised against the salon's catalogue."""

from __future__ import annotations

from datetime import date, time

import pytest

from shared.assistant.understanding import understand

SERVICES = [
    {"id": 1, "title": "Женская стрижка"},
    {"id": 2, "title": "Мужская стрижка"},
    {"id": 3, "title": "Маникюр классический"},
    {"id": 4, "title": "Маникюр с покрытием"},
    {"id": 5, "title": "Педикюр"},
]
STAFF = [{"id": 11, "name": "Анна Иванова"}, {"id": 12, "name": "Мария Смирнова"}, {"id": 13, "name": "Наталья"}]
SUNDAY = date(2026, 11, 29)


@pytest.mark.parametrize(
    ("text", "services", "staff", "day", "after", "before"),
    [
        ("хочу записаться на стрижку завтра после 18", [1, 2], None, date(2026, 11, 30), time(18), None),
        ("можно к Анне в пятницу?", [], 11, date(2026, 12, 4), None, None),
        ("сколько стоит маникюр", [3, 4], None, None, None, None),
        ("Женская стрижка в субботу утром", [1], None, date(2026, 12, 5), None, time(12)),
        ("к Марии на 03.12 в 15:00", [], 12, date(2026, 12, 3), time(15), time(16)),
        ("педикюр 1 декабря до 12", [5], None, date(2026, 12, 1), None, time(12)),
        ("запишите меня на мужскую стрижку к Наталье", [2], 13, None, None, None),
        ("послезавтра вечером", [], None, date(2026, 12, 1), time(17), None),
        ("отмените мою запись", [], None, None, None, None),
        ("2", [], None, None, None, None),
    ],
)
def test_a_wish_in_the_clients_words(
    text: str, services: list[int], staff: int | None, day: date | None, after: time | None, before: time | None
) -> None:
    wish = understand(text, SERVICES, STAFF, SUNDAY)
    assert (sorted(wish.service_ids), wish.staff_id, wish.day, wish.after, wish.before) == (
        services,
        staff,
        day,
        after,
        before,
    )


def test_a_past_date_is_taken_as_next_years_and_nonsense_as_no_day() -> None:
    assert understand("на 01.02", SERVICES, STAFF, SUNDAY).day == date(2027, 2, 1)
    assert understand("на 31.02", SERVICES, STAFF, SUNDAY).day is None
    assert understand("после 25", SERVICES, STAFF, SUNDAY).after is None


def test_two_masters_named_alike_are_not_guessed() -> None:
    staff = [*STAFF, {"id": 14, "name": "Анна Петрова"}]
    assert understand("к Анне", SERVICES, staff, SUNDAY).staff_id is None
