"""How the fleet reads YClients' answers to a write, over real HTTP from the stand-in: a taken time in every
form it comes in is a refusal that offers other times; a refusal with a reason is a refusal; an answer that
says nothing readable is a failure that keeps what it did say. (The booking-loop tests drive real workers
through the same answers.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ops.standins.yclients import YClientsStandIn, generate_salon, yclients_stand_in
from shared.yclients.client import RateLimitedError, RecordRefusedError, YClientsClient, YClientsError, make_client
from tests.support.booking_loop import COMPANY, sync_settings


@pytest.fixture
def yclients(clean_redis: str) -> Iterator[tuple[YClientsStandIn, YClientsClient]]:
    with yclients_stand_in(generate_salon(COMPANY, clients=0, records=0), per_second=1000, per_minute=100_000) as api:
        client = make_client(sync_settings(api))
        yield api, client
        client.close()


def refused(message: str | None = None, code: int | None = None, where: str = "meta") -> dict[str, Any]:
    part: dict[str, Any] = {}
    if message is not None:
        part["message"] = message
    if code is not None:
        part["code"] = code
    return {"success": False, "data": None, where: part}


TAKEN = [
    (422, refused("Выбранное время уже занято", 433)),
    (422, refused(code=433)),
    (200, refused("время уже занято")),
    (200, refused(code=433)),
    (200, refused(code=433, where="errors")),
    (409, refused("Мастер занят в это время")),
    (422, refused("Запись пересекается с другой записью клиента")),
    (409, refused("The selected time is already booked")),
]


@pytest.mark.parametrize(("status", "body"), TAKEN)
def test_a_taken_time_is_read_in_every_form_it_comes_in(
    yclients: tuple[YClientsStandIn, YClientsClient], status: int, body: dict[str, Any]
) -> None:
    api, client = yclients
    api.override = lambda *_: (status, body)
    with pytest.raises(RecordRefusedError) as caught:
        client.write("POST", f"records/{COMPANY}", {"staff_id": 1})
    assert caught.value.slot_taken, f"{status} {body} was not read as a taken time"
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (422, refused("Сотрудник не найден")),
        (200, refused("Услуга недоступна для онлайн-записи")),
        (409, refused(code=431)),
    ],
)
def test_a_refusal_for_another_reason_is_a_refusal_that_keeps_its_reason(
    yclients: tuple[YClientsStandIn, YClientsClient], status: int, body: dict[str, Any]
) -> None:
    api, client = yclients
    api.override = lambda *_: (status, body)
    with pytest.raises(RecordRefusedError) as caught:
        client.write("POST", f"records/{COMPANY}", {"staff_id": 1})
    assert not caught.value.slot_taken
    said = body["meta"].get("message") or f"code {body['meta']['code']}"
    assert said in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "kept"),
    [
        (200, {"success": False, "data": None, "meta": []}, "unsuccessful answer"),
        (200, {"success": False}, "unsuccessful answer"),
        (400, refused("Неверный формат даты"), "Неверный формат даты"),
    ],
)
def test_a_refusal_that_cannot_be_read_is_a_failure_with_its_reason(
    yclients: tuple[YClientsStandIn, YClientsClient], status: int, body: dict[str, Any], kept: str
) -> None:
    api, client = yclients
    api.override = lambda *_: (status, body)
    with pytest.raises(YClientsError) as caught:
        client.write("PUT", f"record/{COMPANY}/1", {"staff_id": 1})
    assert not isinstance(caught.value, RecordRefusedError), "an unreadable answer must not release a booking"
    assert kept in str(caught.value)


def test_a_rate_limit_in_the_envelope_is_not_a_refusal(yclients: tuple[YClientsStandIn, YClientsClient]) -> None:
    api, client = yclients
    api.override = lambda *_: (200, refused("Превышен лимит запросов"))
    with pytest.raises(RateLimitedError) as caught:
        client.write("POST", f"records/{COMPANY}", {"staff_id": 1})
    assert caught.value.retryable
