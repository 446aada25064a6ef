"""The base repository over real PostgreSQL: query building, upserts, batches, transactions, typed errors."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import psycopg
import pytest

from shared.core.db import run, transaction
from shared.core.pool import close_process_pool, open_process_pool
from shared.data.errors import (
    ConflictError,
    ForeignKeyError,
    NotFoundError,
    TransientError,
    UnknownIdentifierError,
    ValidationFailedError,
)
from shared.data.repositories.catalogue import CompanyRepository, ServiceRepository, StaffRepository
from shared.data.repositories.people import ClientRepository
from shared.observability.query_metrics import query_metrics
from tests.support.seed import COMPANY

services = ServiceRepository()
clients = ClientRepository()
companies = CompanyRepository()


def _count(db: psycopg.Connection, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _statements(kind: str) -> int:
    return query_metrics().snapshot()["by_type"].get(kind, {}).get("count", 0)


# ---- reads ----------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("salon")
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"company_id": COMPANY, "price_min__gte": Decimal(1500)}, [101, 201]),
        ({"company_id": COMPANY, "price_min__gt": Decimal(1500)}, [201]),
        ({"company_id": COMPANY, "price_min__lt": Decimal(1500)}, [102, 202]),
        ({"company_id": COMPANY, "price_min__lte": Decimal(900)}, [102, 202]),
        ({"company_id": COMPANY, "category_id__neq": 10}, [201, 202]),
        ({"company_id": COMPANY, "title__ilike": "%стрижка%"}, [101, 102]),
        ({"company_id": COMPANY, "id__in": [102, 201, 999]}, [102, 201]),
        ({"company_id": COMPANY, "comment__is_null": True, "active": False}, [202]),
        ({"company_id": COMPANY, "category_id__is_null": False}, [101, 102, 201, 202]),
    ],
)
def test_find_many_filters(filters: dict, expected: list[int]) -> None:
    assert [row["id"] for row in services.find_many(filters, order_by=["id"])] == expected


@pytest.mark.usefixtures("salon")
def test_order_limit_offset() -> None:
    rows = services.find_many({"company_id": COMPANY}, order_by=["-price_min", "id"], limit=2, offset=1)
    assert [row["id"] for row in rows] == [101, 102]


@pytest.mark.usefixtures("salon")
def test_find_one_and_get() -> None:
    assert services.find_one({"company_id": COMPANY, "id": 101})["title"] == "Женская стрижка"
    assert services.find_one({"company_id": COMPANY, "id": 999}) is None
    with pytest.raises(NotFoundError):
        services.get({"company_id": COMPANY, "id": 999})
    with pytest.raises(ValidationFailedError, match="more than one row"):
        services.find_one({"company_id": COMPANY})


@pytest.mark.usefixtures("salon")
def test_find_by_ids_issues_one_query() -> None:
    before = _statements("select")
    rows = services.find_by_ids([101, 102, 201, 101], scope={"company_id": COMPANY})
    assert sorted(row["id"] for row in rows) == [101, 102, 201]
    assert _statements("select") == before + 1


@pytest.mark.usefixtures("salon")
@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"titel": "x"}, "titel"),
        ({"title; DROP TABLE services": "x"}, "title; DROP TABLE services"),
        ({"title__regex": "x"}, "title__regex"),
    ],
)
def test_unknown_identifiers_are_rejected_before_the_database(filters: dict, named: str) -> None:
    before = query_metrics().snapshot()["total"]
    with pytest.raises(UnknownIdentifierError) as caught:
        services.find_many(filters)
    assert caught.value.fields == [named]
    assert query_metrics().snapshot()["total"] == before


@pytest.mark.usefixtures("salon")
def test_unknown_order_column_is_rejected() -> None:
    with pytest.raises(UnknownIdentifierError, match="nope"):
        services.find_many({"company_id": COMPANY}, order_by=["-nope"])


# ---- writes ---------------------------------------------------------------------------------------------
def test_upsert_inserts_then_updates_on_conflict(salon: psycopg.Connection) -> None:
    created = services.upsert({"company_id": COMPANY, "id": 301, "title": "Окрашивание", "price_min": 3000})
    assert created["title"] == "Окрашивание"
    updated = services.upsert({"company_id": COMPANY, "id": 301, "title": "Окрашивание", "price_min": 3500})
    assert updated["price_min"] == Decimal("3500.00")
    assert _count(salon, "services WHERE id = 301") == 1


def test_upsert_of_unchanged_row_rewrites_nothing_but_returns_it(salon: psycopg.Connection) -> None:
    values = {"company_id": COMPANY, "id": 101, "title": "Женская стрижка", "price_min": Decimal(1500)}
    version = salon.execute("SELECT xmin::text FROM services WHERE id = 101").fetchone()[0]
    row = services.upsert(values)
    assert row["id"] == 101
    assert salon.execute("SELECT xmin::text FROM services WHERE id = 101").fetchone()[0] == version


def test_bulk_upsert_of_1200_rows_runs_in_batches_of_500(salon: psycopg.Connection) -> None:
    rows = [
        {"company_id": COMPANY, "yclients_id": n, "name": f"Клиент {n}", "phone": f"+7911{n:07d}"}
        for n in range(1, 1201)
    ]
    before = _statements("upsert")
    returned = clients.bulk_upsert(rows)
    assert _statements("upsert") == before + 3
    assert len(returned) == 1200
    assert returned.changed == 1200
    assert _count(salon, "clients") == 1200
    # Half change, half stay: every row comes back, only the changed ones are rewritten.
    for row in rows[:600]:
        row["name"] += " (изм.)"
    versions = dict(salon.execute("SELECT yclients_id, xmin::text FROM clients").fetchall())
    again = clients.bulk_upsert(rows)
    assert len(again) == 1200
    assert again.changed == 600
    after = dict(salon.execute("SELECT yclients_id, xmin::text FROM clients").fetchall())
    rewritten = {key for key in after if after[key] != versions[key]}
    assert rewritten == set(range(1, 601))


def test_bulk_upsert_last_row_for_a_key_wins(salon: psycopg.Connection) -> None:
    rows = services.bulk_upsert(
        [{"company_id": COMPANY, "id": 401, "title": "Первое"}, {"company_id": COMPANY, "id": 401, "title": "Второе"}]
    )
    assert [row["title"] for row in rows] == ["Второе"]


def test_insert_returns_the_row_and_delete_needs_a_filter(salon: psycopg.Connection) -> None:
    row = clients.insert({"company_id": COMPANY, "phone": "8 (911) 000-00-01", "name": "Ольга"})
    assert row["phone"] == "+79110000001"
    assert row["id"] > 0
    with pytest.raises(ValidationFailedError, match="at least one filter"):
        clients.delete({})
    assert clients.delete({"id": row["id"]}) == 1
    assert _count(salon, "clients") == 0


# ---- validation -----------------------------------------------------------------------------------------
def test_validation_names_each_bad_field_and_writes_nothing(salon: psycopg.Connection) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        clients.insert({"company_id": -1, "phone": "12", "email": "not-an-email", "discount": 150})
    assert set(caught.value.fields) == {"company_id", "phone", "email", "discount"}
    assert _count(salon, "clients") == 0


def test_service_rules_are_checked(salon: psycopg.Connection) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        services.insert({"company_id": COMPANY, "id": 0, "title": "  ", "price_min": -5, "duration_seconds": 10})
    assert set(caught.value.fields) == {"id", "title", "price_min", "duration_seconds"}
    with pytest.raises(ValidationFailedError, match="price_max is below price_min"):
        services.insert({"company_id": COMPANY, "id": 5, "title": "Х", "price_min": 100, "price_max": 50})


def test_bulk_upsert_refuses_the_whole_batch_when_a_row_is_invalid(salon: psycopg.Connection) -> None:
    rows = [{"company_id": COMPANY, "id": 501, "title": "Годная"}, {"company_id": COMPANY, "id": 502, "title": ""}]
    with pytest.raises(ValidationFailedError, match="title"):
        services.bulk_upsert(rows)
    valid, rejected = services.validate_many(rows)
    assert [row["id"] for row in valid] == [501]
    assert rejected[0][0] == 1
    assert _count(salon, "services WHERE id IN (501, 502)") == 0


# ---- typed errors ---------------------------------------------------------------------------------------
def test_unique_violation_becomes_a_conflict_naming_the_constraint(salon: psycopg.Connection) -> None:
    clients.insert({"company_id": COMPANY, "yclients_id": 7, "phone": "+79110000007"})
    with pytest.raises(ConflictError) as caught:
        clients.insert({"company_id": COMPANY, "yclients_id": 7, "phone": "+79110000008"})
    assert caught.value.constraint == "clients_company_id_yclients_id_key"
    assert caught.value.table == "clients"
    assert "+7911" not in str(caught.value)  # the driver's DETAIL line (with the values) is not repeated
    assert caught.value.__cause__ is None


def test_foreign_key_violation_becomes_a_typed_error(salon: psycopg.Connection) -> None:
    with pytest.raises(ForeignKeyError) as caught:
        services.insert({"company_id": 1, "id": 1, "title": "Сирота"})
    assert caught.value.constraint == "services_company_id_fkey"


def test_raw_driver_errors_never_escape(salon: psycopg.Connection) -> None:
    with pytest.raises(ConflictError):
        run("INSERT INTO companies (id, title) VALUES (%s, 'x')", (COMPANY,), table="companies", operation="insert")


# ---- transactions ---------------------------------------------------------------------------------------
def test_transaction_commits_three_repositories_together(salon: psycopg.Connection) -> None:
    with transaction() as tx:
        companies.upsert({"id": 1001, "title": "Второй салон"}, conn=tx)
        StaffRepository().insert({"company_id": 1001, "id": 9, "name": "Ирина"})  # joins the transaction
        clients.insert({"company_id": 1001, "phone": "+79110000009"})
        assert _count(salon, "companies WHERE id = 1001") == 0  # not visible outside before commit
    assert _count(salon, "companies WHERE id = 1001") == 1
    assert _count(salon, "staff WHERE company_id = 1001") == 1
    assert _count(salon, "clients WHERE company_id = 1001") == 1


def test_transaction_rolls_back_all_three_on_error(salon: psycopg.Connection) -> None:
    def three_writes_then_a_duplicate() -> None:
        with transaction():
            companies.upsert({"id": 1002, "title": "Третий салон"})
            StaffRepository().insert({"company_id": 1002, "id": 9, "name": "Ирина"})
            clients.insert({"company_id": 1002, "phone": "+79110000010", "yclients_id": 5})
            clients.insert({"company_id": 1002, "phone": "+79110000011", "yclients_id": 5})

    with pytest.raises(ConflictError):
        three_writes_then_a_duplicate()
    assert _count(salon, "companies WHERE id = 1002") == 0
    assert _count(salon, "staff WHERE company_id = 1002") == 0
    assert _count(salon, "clients WHERE company_id = 1002") == 0


def test_nested_transaction_rolls_back_to_its_savepoint(salon: psycopg.Connection) -> None:
    def inner_block_with_a_duplicate() -> None:
        with transaction():
            clients.insert({"company_id": COMPANY, "phone": "+79110000013", "yclients_id": 13})
            clients.insert({"company_id": COMPANY, "phone": "+79110000014", "yclients_id": 12})

    with transaction():
        clients.insert({"company_id": COMPANY, "phone": "+79110000012", "yclients_id": 12})
        with pytest.raises(ConflictError):
            inner_block_with_a_duplicate()
        clients.insert({"company_id": COMPANY, "phone": "+79110000015", "yclients_id": 15})
    kept = [row[0] for row in salon.execute("SELECT yclients_id FROM clients ORDER BY 1").fetchall()]
    assert kept == [12, 15]


def test_repositories_inside_a_transaction_share_its_one_connection(salon: psycopg.Connection) -> None:
    def backend() -> int:
        return run("SELECT pg_backend_pid() AS pid", table=None, operation="select")[0]["pid"]

    with transaction():
        pids = {backend()}
        companies.find_many({"id": COMPANY})
        pids.add(backend())
        with transaction():
            pids.add(backend())
    assert len(pids) == 1


# ---- concurrency and the pool ---------------------------------------------------------------------------
def test_concurrent_upserts_of_one_key_leave_one_row(salon: psycopg.Connection) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def upsert(n: int) -> None:
        try:
            barrier.wait()
            for attempt in range(10):
                clients.upsert(
                    {
                        "company_id": COMPANY,
                        "yclients_id": 4242,
                        "name": f"Поток {n}.{attempt}",
                        "phone": "+79114242424",
                    }
                )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=upsert, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _count(salon, "clients WHERE yclients_id = 4242") == 1


def test_local_client_is_created_once_under_concurrency(salon: psycopg.Connection) -> None:
    barrier = threading.Barrier(4)
    ids: list[int] = []

    def create() -> None:
        barrier.wait()
        ids.append(clients.find_or_create_by_phone(COMPANY, "8 911 555-44-33", name="Вера")["id"])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1
    assert _count(salon, "clients WHERE phone = '+79115554433'") == 1


def test_pool_exhaustion_is_a_transient_error_within_the_timeout(db: psycopg.Connection) -> None:
    pool = open_process_pool(role="exhaust", max_size=1, timeout=0.5, wait=True)
    try:
        with pool.connection():
            started = time.monotonic()
            with pytest.raises(TransientError, match="no free connection") as caught:
                companies.find_many({"id": COMPANY})
            assert time.monotonic() - started < 2.0
            assert caught.value.retryable
    finally:
        close_process_pool()


def test_copy_upsert_merges_like_bulk_upsert_and_counts_changes(salon: psycopg.Connection) -> None:
    rows = [
        {"company_id": COMPANY, "yclients_id": n, "name": f"Клиент {n}", "phone": f"+7911{n:07d}"}
        for n in range(1, 1201)
    ]
    before = _statements("copy")
    assert clients.copy_upsert(rows) == 1200
    assert _statements("copy") == before + 1
    for row in rows[:600]:
        row["name"] += " (изм.)"
    versions = dict(salon.execute("SELECT yclients_id, xmin::text FROM clients").fetchall())
    assert clients.copy_upsert(rows) == 600
    after = dict(salon.execute("SELECT yclients_id, xmin::text FROM clients").fetchall())
    assert {key for key in after if after[key] != versions[key]} == set(range(1, 601))
    assert salon.execute("SELECT name FROM clients WHERE yclients_id = 1").fetchone()[0] == "Клиент 1 (изм.)"


def test_copy_upsert_carries_json_and_array_columns(salon: psycopg.Connection) -> None:
    from datetime import date

    from shared.data.repositories.calendar import StaffScheduleRepository

    schedules = StaffScheduleRepository()
    changed = schedules.copy_upsert(
        [
            {
                "company_id": COMPANY,
                "staff_id": 1,
                "date": date(2026, 12, n),
                "slots": [{"from": "10:00", "to": "18:00"}],
            }
            for n in range(1, 4)
        ]
    )
    assert changed == 3
    assert salon.execute("SELECT slots FROM staff_schedules WHERE date = '2026-12-02'").fetchone()[0] == [
        {"from": "10:00", "to": "18:00"}
    ]
    assert StaffRepository().copy_upsert([{"company_id": COMPANY, "id": 1, "name": "Анна", "service_ids": [102]}]) == 1
    assert salon.execute("SELECT service_ids FROM staff WHERE id = 1").fetchone()[0] == [102]
