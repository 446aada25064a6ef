"""The client's own words: the understanding step, case by case and on the corpora in tests/corpus/."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path

import pytest

from ops.standins.yclients import generate_salon
from shared.assistant.evaluation import load_corpus, score
from shared.assistant.language.catalogue import Catalogue, catalogue
from shared.assistant.language.normalise import normalise
from shared.assistant.understanding import Steps, understand

SERVICES = [
    {"id": 1, "title": "Женская стрижка"},
    {"id": 2, "title": "Мужская стрижка"},
    {"id": 3, "title": "Маникюр классический"},
    {"id": 4, "title": "Маникюр с покрытием"},
    {"id": 5, "title": "Педикюр"},
]
STAFF = [{"id": 11, "name": "Анна Иванова"}, {"id": 12, "name": "Мария Смирнова"}, {"id": 13, "name": "Наталья"}]
SUNDAY = date(2026, 11, 29)
CORPORA = Path(__file__).parent / "corpus"
# The share of each corpus understood when this floor was set; it may rise, never fall.
FLOORS = {"messages.toml": 277, "heldout.toml": 153, "blind.toml": 197, "blind2.toml": 146, "blind3.toml": 117}


def read(text: str, services: list[dict] = SERVICES, staff: list[dict] = STAFF, context: str = "idle"):
    return understand(text, catalogue(services, staff), SUNDAY, context)


@pytest.mark.parametrize(
    ("text", "services", "staff", "day", "after", "before"),
    [
        ("хочу записаться на стрижку завтра после 18", [1, 2], None, date(2026, 11, 30), time(18), None),
        ("можно к Анне в пятницу?", [], 11, date(2026, 12, 4), None, None),
        ("сколько стоит маникюр", [3, 4], None, None, None, None),
        ("Женская стрижка в субботу утром", [1], None, date(2026, 12, 5), None, time(12)),
        ("к Марии на 03.12 после 15:00", [], 12, date(2026, 12, 3), time(15), None),
        ("педикюр 1 декабря до 12", [5], None, date(2026, 12, 1), None, time(12)),
        ("запишите меня на мужскую стрижку к Наталье", [2], 13, None, None, None),
        ("послезавтра вечером", [], None, date(2026, 12, 1), time(17), None),
        ("отмените мою запись", [], None, None, None, None),
    ],
)
def test_a_wish_in_the_clients_words(
    text: str, services: list[int], staff: int | None, day: date | None, after: time | None, before: time | None
) -> None:
    got = read(text)
    assert (sorted(got.service_ids), got.staff_id, got.when.day, got.when.after, got.when.before) == (
        services,
        staff,
        day,
        after,
        before,
    )


def test_a_past_date_is_taken_as_next_years_and_nonsense_as_no_day() -> None:
    assert read("на 01.02 на стрижку").when.day == date(2027, 2, 1)
    assert read("на 31.02 на стрижку").when.day is None
    assert read("стрижка после 25").when.after is None


def test_two_masters_named_alike_are_not_guessed() -> None:
    staff = [*STAFF, {"id": 14, "name": "Анна Петрова"}]
    got = read("к Анне", staff=staff)
    assert got.staff_id is None
    assert sorted(got.staff_ambiguous) == [11, 14]


def test_a_short_name_finds_the_master_and_an_unknown_name_is_said_to_be_unknown() -> None:
    assert read("можно к Машеньке на маникюр").staff_id == 12
    assert read("к Наташе в субботу").staff_id == 13
    unknown = read("запишите к Оле на стрижку")
    assert (unknown.staff_id, unknown.missing_master) == (None, "оля")
    assert read("это Мария, хочу на маникюр").staff_id is None, "the client's own name is not a master"


def test_an_hour_means_a_salon_hour_and_the_day_part_decides() -> None:
    assert read("на стрижку в 5").when.at == time(17)
    assert read("на стрижку в 10").when.at == time(10)
    assert read("на стрижку в 7 утра").when.at == time(7)
    assert read("на стрижку часиков в 8 вечера").when.at == time(20)
    assert read("на стрижку в полпятого").when.at == time(16, 30)
    assert read("опаздываю минут на 20").when.at is None
    assert read("на 5е число").when.at is None


def test_a_weekday_named_on_the_same_weekday_is_next_week_and_next_means_next_calendar_week() -> None:
    assert read("на стрижку в воскресенье").when.day == date(2026, 12, 6)
    assert read("на стрижку в эту субботу").when.day == date(2026, 12, 5)
    assert read("на стрижку в следующую субботу").when.day == date(2026, 12, 5), "said on a Sunday"
    wednesday = understand("на стрижку в следующую пятницу", catalogue(SERVICES, STAFF), date(2026, 12, 2))
    assert wednesday.when.day == date(2026, 12, 11)


def test_latin_letters_and_chat_spelling_are_read_as_russian() -> None:
    assert normalise("zapishite menya na manikur zavtra") == "запишите меня на маникур завтра"
    assert normalise("Спс 👍!!!") == "ок спасибо  !!!"
    got = read("zapishite menya na manikur zavtra")
    assert (got.intents, got.service_ids, got.when.day) == (("book",), [3, 4], date(2026, 11, 30))


@pytest.mark.parametrize(
    ("text", "intents"),
    [
        ("не отменяйте, пожалуйста", ("confirm",)),
        ("нет проблем, буду", ("confirm",)),
        ("нет-нет, приду", ("confirm",)),
        ("не надо отменять, я буду", ("confirm",)),
        ("нет, не смогу", ("cancel",)),
        ("не смогу, давайте в субботу", ("reschedule",)),
    ],
)
def test_negations_in_an_answer_to_a_reminder(text: str, intents: tuple[str, ...]) -> None:
    assert read(text, context="reminder").intents == intents


@pytest.mark.parametrize(
    "text",
    ["+79215554433", "Покажи записи номера +7 (921) 555-44-33", "мой номер 8 921 555 44 33", "+7-921-555-4433 это я"],
)
@pytest.mark.parametrize("context", ["question", "reminder", "slots"])
def test_a_phone_number_is_never_read_as_an_answer(text: str, context: str) -> None:
    """Its "+" is not the chat's "+" for yes, and none of its digits picks an option."""
    understood = read(text, context=context)
    assert not {"yes", "confirm", "cancel"} & set(understood.intents), understood.intents
    assert understood.pick is None


def test_a_greeting_does_not_hide_the_request_and_two_requests_are_both_read() -> None:
    got = read("Здравствуйте! можно записаться на маникюр в субботу?")
    assert (got.greeting, got.intents) == (True, ("book",))
    assert read("сколько стоит педикюр и есть ли время в субботу?").intents == ("price", "book")


@pytest.fixture(scope="module")
def demo_salon() -> Catalogue:
    salon = generate_salon(962302, clients=0, records=0)
    return catalogue(
        [{"id": int(s["id"]), "title": s["title"], "category_id": s["category_id"]} for s in salon.services],
        [{"id": int(m["id"]), "name": m["name"]} for m in salon.staff],
    )


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_the_corpus_is_understood_at_least_as_well_as_before(name: str, demo_salon: Catalogue) -> None:
    result = score(load_corpus(CORPORA / name), demo_salon)
    report = "\n".join(f"{e.text!r}: {'; '.join(wrong)}" for e, wrong in result.failures)
    assert result.understood >= FLOORS[name], f"{result.understood}/{result.total} understood:\n{report}"


def test_each_step_adds_to_the_understanding(demo_salon: Catalogue) -> None:
    """Without lemmas, typo matching or Latin letters the same corpus is understood less: each step earns its place."""
    corpus = load_corpus(CORPORA / "messages.toml")
    full = score(corpus, demo_salon).understood
    for steps in (Steps(lemmas=False), Steps(typos=False), Steps(latin=False)):
        assert score(corpus, demo_salon, steps).understood < full, steps


def test_reading_a_message_is_fast_enough_for_the_answering_path(demo_salon: Catalogue) -> None:
    """Not a timing test: the reading of one message must not touch the network or the disk after warm-up."""
    understand("прогрев", demo_salon, SUNDAY)
    got = understand("запишите на маникюр в пятницу после 6", demo_salon, datetime(2026, 12, 2).date())
    assert got.intents == ("book",)
