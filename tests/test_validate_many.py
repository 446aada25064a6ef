"""A page validated at once (`validate_many`, pydantic a chunk at a time) says what `validate` says row by row."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from shared.data.errors import ValidationFailedError
from shared.data.repositories.calendar import BookingRepository, StaffScheduleRepository
from shared.data.repositories.catalogue import ServiceRepository, StaffRepository
from shared.data.repositories.people import ClientRepository
from shared.data.repository import VALIDATE_CHUNK, Rejection, Repository, Row

MOMENT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _client(n: int, rng: random.Random) -> dict[str, Any]:
    row: dict[str, Any] = {"company_id": 1, "yclients_id": n + 1, "name": f"  Клиент {n} ", "phone": f"+7911{n:07d}"}
    if n % 3:
        row |= {"email": f"Client{n}@Example.com", "discount": Decimal(n % 50), "visits_count": n % 30}
    if n % 4 == 0:
        row["phone"] = rng.choice([f"8 911 {n:07d}", f" 7911{n:07d}", f"7911{n:07d}"])
    if n % 5 == 0:
        row["synced_at"] = MOMENT
    return row


def _bad_client(n: int, rng: random.Random) -> dict[str, Any]:
    row = _client(n, rng)
    spoil = rng.choice(
        [
            {"phone": "12"},
            {"phone": 79110000001},
            {"phone": "+79300000000"},
            {"phone": None, "yclients_id": None},  # the model-level rule: a phone or a YClients id
            {"email": "not-an-email"},
            {"discount": 150},
            {"company_id": -1, "name": ""},
            {"synced_at": MOMENT.replace(tzinfo=None)},
            {"unknown_column": 1},
        ]
    )
    return row | spoil


def _schedule(n: int, _: random.Random) -> dict[str, Any]:
    slots = [{"from": "12:00", "to": "13:00"}, {"from": "09:00", "to": "11:00"}]  # aliases, sorted by the model
    return {"company_id": 1, "staff_id": n + 1, "date": date(2026, 3, 2), "slots": slots, "busy_intervals": [{"a": n}]}


def _bad_schedule(n: int, rng: random.Random) -> dict[str, Any]:
    bad = rng.choice(
        [[{"from": "9:00", "to": "10:00"}], [{"from": "10:00", "to": "12:00"}, {"from": "11:00", "to": "13:00"}]]
    )
    return _schedule(n, rng) | {"slots": bad}


def _booking(n: int, _: random.Random) -> dict[str, Any]:
    starts = MOMENT + timedelta(hours=n)
    return {
        "company_id": 1,
        "yclients_id": n + 1,
        "staff_id": 2,
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=1),
    }


def _bad_booking(n: int, rng: random.Random) -> dict[str, Any]:
    row = _booking(n, rng)
    return row | rng.choice([{"ends_at": row["starts_at"]}, {"status": "lost"}, {"staff_id": 0}])


def _service(n: int, _: random.Random) -> dict[str, Any]:
    return {"company_id": 1, "id": n + 1, "title": f"Услуга {n}", "price_min": 100, "price_max": 200 + n}


def _bad_service(n: int, rng: random.Random) -> dict[str, Any]:
    return _service(n, rng) | rng.choice([{"price_max": 50}, {"duration_seconds": 10}, {"title": " "}])


def _staff(n: int, _: random.Random) -> dict[str, Any]:
    return {"company_id": 1, "id": n + 1, "name": f"Мастер {n}", "service_ids": [1, 2, n + 1]}


def _bad_staff(n: int, rng: random.Random) -> dict[str, Any]:
    return _staff(n, rng) | {"service_ids": [1, -2]}


CASES = [
    (ClientRepository(), _client, _bad_client),
    (StaffScheduleRepository(), _schedule, _bad_schedule),
    (BookingRepository(), _booking, _bad_booking),
    (ServiceRepository(), _service, _bad_service),
    (StaffRepository(), _staff, _bad_staff),
]


def _row_by_row(repo: Repository, rows: list[Mapping[str, Any]]) -> tuple[list[Row], list[Rejection]]:
    valid: list[Row] = []
    rejected: list[Rejection] = []
    for index, row in enumerate(rows):
        try:
            valid.append(repo.validate(row))
        except ValidationFailedError as exc:
            rejected.append((index, exc.errors))
    return valid, rejected


@pytest.mark.parametrize(("repo", "good", "bad"), CASES, ids=[type(case[0]).__name__ for case in CASES])
@pytest.mark.parametrize("bad_rows", [0, 1, 120, VALIDATE_CHUNK * 3 + 16])
def test_a_page_validates_as_its_rows_do_one_by_one(repo: Repository, good: Any, bad: Any, bad_rows: int) -> None:
    rng = random.Random(f"{type(repo).__name__}{bad_rows}")
    count = VALIDATE_CHUNK * 3 + 16  # chunks of every kind: all good, one bad row, many, all bad, a short last one
    spoilt = set(rng.sample(range(count), bad_rows))
    rows: list[Mapping[str, Any]] = [bad(n, rng) if n in spoilt else good(n, rng) for n in range(count)]
    rows[5] = MappingProxyType(dict(rows[5]))  # any mapping, not only a dict
    expected = _row_by_row(repo, rows)
    assert len(expected[1]) == bad_rows
    valid, rejected = repo.validate_many(rows)
    assert (valid, rejected) == expected
    assert [list(row) for row in valid] == [list(row) for row in expected[0]]  # the same columns in the same order


def test_an_empty_page() -> None:
    assert ClientRepository().validate_many([]) == ([], [])
