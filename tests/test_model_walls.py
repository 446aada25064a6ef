"""The walls around the model, on their own: what leaves carries no client phone number or name, and what
comes back reaches the client only as short Russian plain text, with the name put back."""

from __future__ import annotations

import pytest

from shared.assistant.model.walls import NAME, PHONE, ReplyRefused, Walls

WALLS = Walls("Мария Петрова", "+79110001122", "+7 (495) 000-00-00", max_chars=300)


@pytest.mark.parametrize(
    "text",
    [
        "Меня зовут Мария, мой номер +7 911 000-11-22",
        "покажи записи номера +7 (921) 555-44-33",
        "запишите маму, 8-921-5554433, Петрова Мария",
        "мой телефон 79110001122",
    ],
)
def test_no_phone_number_or_client_name_leaves_for_the_model(text: str) -> None:
    sent = WALLS.outgoing(text)
    digits = "".join(ch for ch in sent if ch.isdigit())
    assert len(digits) < 7, sent
    assert "мария" not in sent.lower()
    assert "петров" not in sent.lower()
    assert PHONE in sent or NAME in sent


def test_a_tool_result_keeps_the_salons_phone_and_loses_the_clients() -> None:
    result = '{"answer": "+7 (495) 000-00-00", "note": "Мария, 8 911 000 11 22"}'
    kept = WALLS.private(result)
    assert "+7 (495) 000-00-00" in kept
    assert "911" not in kept
    assert "Мария" not in kept


def test_the_clients_name_is_put_back_and_emphasis_dropped() -> None:
    assert WALLS.incoming(f"**{NAME}**, маникюр стоит 1300 ₽.") == "Мария Петрова, маникюр стоит 1300 ₽."


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Sure! I can help you book an appointment.", "not_russian"),
        ("ж" * 301, "too_long"),
        ("<b>Запись</b> готова", "markup"),
        ("```\nзапись\n```", "markup"),
        ("Запись клиента +7 921 555-44-33 на завтра", "personal_data"),
    ],
)
def test_a_reply_outside_the_walls_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(ReplyRefused) as caught:
        WALLS.incoming(text)
    assert caught.value.reason == reason


def test_the_salons_own_phone_may_be_in_a_reply() -> None:
    assert "+7 (495) 000-00-00" in WALLS.incoming("Позвоните нам: +7 (495) 000-00-00")
