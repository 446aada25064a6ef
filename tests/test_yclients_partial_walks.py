"""The read side against a hostile API: a walk that reads less than YClients claimed ends its run `partial`
(saved what it read, deleted nothing, no success), and no request waits longer than its deadline however slowly
the answer drips."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ops.standins.yclients import Salon, YClientsStandIn, generate_salon
from shared.core.failure import is_retryable
from shared.core.resources import take
from shared.core.settings import Settings
from shared.data.repositories.sync_runs import SyncRunRepository
from shared.health.checks import check_sync
from shared.yclients.client import YClientsClient, YClientsError, make_client
from shared.yclients.sync import SyncFailedError
from tests.support.booking_loop import settings_for, sync

COMPANY = 962302


@pytest.fixture(scope="module")
def generated_salon() -> Salon:
    return generate_salon(COMPANY, clients=450, records=200)


def live(db: psycopg.Connection, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table} WHERE deleted_at IS NULL").fetchone()[0]


def newest_run(db: psycopg.Connection, entity: str) -> tuple[str, str | None]:
    return db.execute(
        "SELECT status, error FROM sync_runs WHERE entity = %s ORDER BY id DESC LIMIT 1", (entity,)
    ).fetchone()


@pytest.fixture
def synced(stand_in: YClientsStandIn, db: psycopg.Connection) -> Settings:
    """Every entity synced once, successfully (the freshness the health report judges by)."""
    settings = settings_for(stand_in)
    for entity in ("company", "services", "staff", "schedules", "schedules_today", "clients"):
        assert sync(settings, entity).status == "succeeded"
    assert sync(settings, "records", mode="full").status == "succeeded"
    return settings


# ---- walks that read less than YClients claimed --------------------------------------------------------
def test_a_clients_listing_that_ignores_page_ends_the_run_partial_with_the_figures(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    succeeded_at = SyncRunRepository().last_success(COMPANY, "clients")
    api_salon.clients[5_000_010]["name"] = "Вера Переименованная"  # on page 1: read, so saved
    del api_salon.clients[5_000_449]  # gone upstream, but the walk never saw the pages that would prove it
    stand_in.ignore_page = True
    run = sync(settings_for(stand_in, page_size=50), "clients")

    figures = "partial: read 50 distinct rows of total_count 449 (the server repeated page 1)"
    assert (run.status, run.error) == ("partial", figures)
    assert newest_run(db, "clients") == ("partial", figures)
    assert f"clients for company {COMPANY} (full) partial: pages 1, fetched 50" in run.render()
    assert figures in run.render()
    assert "skipped: the walk ended early (repeated page)" in run.counters.deletion
    name = db.execute("SELECT name FROM clients WHERE yclients_id = 5000010").fetchone()[0]
    assert name == "Вера Переименованная", "what the walk read is saved"
    assert live(db, "clients") == 450, "nothing is marked deleted"
    assert SyncRunRepository().last_success(COMPANY, "clients") == succeeded_at, "a partial run is no success"


def test_a_total_count_above_what_the_pages_hold_ends_the_run_partial(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    succeeded_at = SyncRunRepository().last_success(COMPANY, "clients")
    api_salon.clients[5_000_440]["name"] = "Нина Последняя"  # on page 3, the last with rows
    del api_salon.clients[5_000_001]
    stand_in.inflate_total_count = 10_000 - 449  # total_count 10000; the pages go empty after 449 rows
    run = sync(synced, "clients")

    figures = "partial: read 449 distinct rows of total_count 10000 (page 4 came back empty)"
    assert (run.status, run.error) == ("partial", figures)
    assert newest_run(db, "clients") == ("partial", figures)
    assert run.counters.fetched == 449
    assert db.execute("SELECT name FROM clients WHERE yclients_id = 5000440").fetchone()[0] == "Нина Последняя"
    assert live(db, "clients") == 450, "the vanished client is not taken for deleted on a short walk"
    assert SyncRunRepository().last_success(COMPANY, "clients") == succeeded_at

    # The same rows with no total_count at all claim nothing more: ending on an empty page, the run succeeds.
    rows = list(api_salon.clients.values())

    def no_total(method: str, path: str, query: dict, body: dict) -> tuple | None:
        if not path.endswith("/clients/search"):
            return None
        page = body["page"]
        return 200, {"success": True, "data": rows[(page - 1) * 150 : page * 150], "meta": []}

    stand_in.override = no_total
    unclaimed = sync(synced, "clients")
    assert (unclaimed.status, unclaimed.error, unclaimed.counters.fetched) == ("succeeded", None, 449)
    assert SyncRunRepository().last_success(COMPANY, "clients") > succeeded_at


def test_a_partial_records_run_is_not_where_the_next_incremental_run_starts(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    # The last success was an hour ago; since then a record on a later page was cancelled in the salon.
    db.execute("UPDATE sync_runs SET started_at = started_at - interval '1 hour' WHERE entity = 'records'")
    succeeded_at = SyncRunRepository().last_success(COMPANY, "records")
    cancelled = api_salon.records[9_000_198]
    cancelled["deleted"] = True
    cancelled["last_change_date"] = (datetime.now(UTC) - timedelta(minutes=30)).isoformat(timespec="seconds")
    del api_salon.records[9_000_150]  # gone upstream: a full walk that proved it would mark it deleted
    settings = settings_for(stand_in, page_size=50)
    stand_in.ignore_page = True
    run = sync(settings, "records", mode="full")

    figures = "partial: read 50 distinct rows of total_count 199 (the server repeated page 1)"
    assert (run.status, run.error) == ("partial", figures)
    assert newest_run(db, "records") == ("partial", figures)
    assert SyncRunRepository().last_success(COMPANY, "records") == succeeded_at
    booking = "SELECT deleted_at IS NOT NULL FROM bookings WHERE yclients_id = %s"
    assert db.execute(booking, (9_000_150,)).fetchone() == (False,), "nothing deleted on a partial walk"
    assert db.execute(booking, (9_000_198,)).fetchone() == (False,), "the cancellation was on a page never read"

    stand_in.ignore_page = False
    following = sync(settings, "records")
    assert following.mode == "incremental"
    assert following.status == "succeeded"
    assert db.execute(booking, (9_000_198,)).fetchone() == (True,), (
        "the next incremental run reads changes since the last success, not since the partial run"
    )


def test_a_partial_run_is_a_warning_with_its_figures_until_a_run_succeeds(
    synced: Settings, stand_in: YClientsStandIn, db: psycopg.Connection
) -> None:
    healthy = check_sync(synced)
    assert (healthy.status, healthy.problems) == ("healthy", [])
    assert healthy.details["partial_runs_last_day"] == 0
    age_before = SyncRunRepository().seconds_since_success()[(COMPANY, "clients")]

    stand_in.ignore_page = True
    assert sync(synced, "clients").status == "partial"
    warned = check_sync(synced)
    assert warned.status == "warning"
    assert warned.problems == [
        f"clients of company {COMPANY} ended partial: read 200 distinct rows of total_count 450"
        " (the server repeated page 1)"
    ]
    assert (warned.details["partial_runs_last_day"], warned.details["failed_runs_last_day"]) == (1, 0)
    assert SyncRunRepository().seconds_since_success()[(COMPANY, "clients")] >= age_before, "freshness kept"

    stand_in.ignore_page = False
    assert sync(synced, "clients").status == "succeeded"
    recovered = check_sync(synced)
    assert (recovered.status, recovered.problems) == ("healthy", [])
    assert recovered.details["partial_runs_last_day"] == 1, "still counted, like failed runs"


def test_the_sync_task_returns_partial_and_does_not_retry(
    synced: Settings, stand_in: YClientsStandIn, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.core.settings import get_settings
    from workers.yclients import sync_entity_task

    for name, value in {
        "FLEET_YCLIENTS__BASE_URL": stand_in.url,
        "FLEET_YCLIENTS__PARTNER_TOKEN": "partner-token",
        "FLEET_YCLIENTS__USER_TOKEN": "user-token",
        "FLEET_YCLIENTS__COMPANY_IDS": f"[{COMPANY}]",
        "FLEET_YCLIENTS__REQUESTS_PER_SECOND": "1000",
        "FLEET_YCLIENTS__REQUESTS_PER_MINUTE": "100000",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    stale = take("yclients")  # a client another test made for another stand-in
    if stale is not None:
        stale.close()
    stand_in.ignore_page = True
    try:
        result = sync_entity_task.apply(args=("clients", COMPANY))
    finally:
        made = take("yclients")
        if made is not None:
            made.close()
        get_settings.cache_clear()
    assert result.state == "SUCCESS", result.result
    assert result.result["status"] == "partial"
    assert result.result["error"] == "partial: read 200 distinct rows of total_count 450 (the server repeated page 1)"
    runs = db.execute("SELECT status FROM sync_runs WHERE entity = 'clients' ORDER BY id").fetchall()
    assert runs == [("succeeded",), ("partial",)], "one partial run, not retried"


# ---- one request, one deadline ------------------------------------------------------------------------
def client_for(stand_in: YClientsStandIn, deadline: float, **overrides: Any) -> YClientsClient:
    """A client whose requests must be answered whole within `deadline` seconds, tried once unless told."""
    return make_client(settings_for(stand_in, request_deadline_seconds=deadline, **{"max_attempts": 1, **overrides}))


def test_a_dripping_answer_is_cut_at_the_deadline_and_is_retryable(stand_in: YClientsStandIn, api_salon: Salon) -> None:
    path = f"record/{COMPANY}/9000001"
    client = client_for(stand_in, 1.0)
    try:
        stand_in.drip_answers, stand_in.drip_seconds, stand_in.drip_bytes = 1, 0.2, 48  # ~3 s for the whole body
        started = time.monotonic()
        with pytest.raises(YClientsError) as caught:
            client.one(path)
        elapsed = time.monotonic() - started
        assert str(caught.value) == f"GET {path}: no complete answer within 1 s"
        assert caught.value.retryable
        assert 0.9 <= elapsed < 1.6, elapsed

        stand_in.drip_answers, stand_in.drip_bytes = 1, 400  # a few chunks, all within the deadline
        record = client.one(path)
        assert record is not None
        assert int(record["id"]) == 9_000_001
        assert record["client"] == api_salon.records[9_000_001]["client"]
    finally:
        client.close()


def test_a_dripping_answer_to_a_write_is_cut_too(stand_in: YClientsStandIn, api_salon: Salon) -> None:
    row = api_salon.records[9_000_002]
    body = {
        "staff_id": int(row["staff_id"]),
        "datetime": row["datetime"],
        "seance_length": 3600,
        "services": [{"id": int(row["services"][0]["id"])}],
    }
    client = client_for(stand_in, 1.0)
    stand_in.drip_methods = ("PUT",)
    stand_in.drip_answers, stand_in.drip_seconds, stand_in.drip_bytes = 1, 0.2, 48
    started = time.monotonic()
    try:
        with pytest.raises(YClientsError) as caught:
            client.write("PUT", f"record/{COMPANY}/9000002", body)
    finally:
        client.close()
    assert str(caught.value) == f"PUT record/{COMPANY}/9000002: no complete answer within 1 s"
    assert caught.value.retryable, "the outcome is unknown: the CRM operation looks before it writes again"
    assert time.monotonic() - started < 1.6


def test_a_sync_whose_page_drips_fails_naming_the_deadline_instead_of_hanging(
    stand_in: YClientsStandIn, db: psycopg.Connection
) -> None:
    settings = settings_for(stand_in, request_deadline_seconds=1.0, max_attempts=2)
    for entity in ("company", "services", "staff"):
        sync(settings, entity)
    stand_in.drip_answers, stand_in.drip_seconds, stand_in.drip_bytes = 2, 0.2, 4096  # each try: ~4 s
    started = time.monotonic()
    with pytest.raises(SyncFailedError) as caught:
        sync(settings, "records", mode="full")
    assert time.monotonic() - started < 4.0, "two tries of a second each, not the drip's whole length"
    assert f"GET records/{COMPANY}: no complete answer within 1 s" in str(caught.value)
    assert is_retryable(caught.value.__cause__), "the sync task tries the run again later"
    status, error = newest_run(db, "records")
    assert status == "failed"
    assert "no complete answer within 1 s" in error


def test_a_cut_page_is_asked_again_and_a_long_answer_in_time_is_read_whole(
    stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    settings = settings_for(stand_in, request_deadline_seconds=2.0)
    for entity in ("company", "services", "staff"):
        sync(settings, entity)
    for record_id, row in api_salon.records.items():
        row["comment"] = f"Запись {record_id} " + "я" * 3000  # about 1.2 MB for the page of 200
    stand_in.drip_answers, stand_in.drip_seconds, stand_in.drip_bytes = 1, 0.3, 64 * 1024  # ~6 s: cut
    run = sync(settings, "records", mode="full")
    assert (run.status, run.counters.fetched) == ("succeeded", 200)
    asked = [path for _, path, _ in stand_in.requests if path.rstrip("/").endswith(f"/records/{COMPANY}")]
    assert len(asked) == 2, "the dripping page was cut and asked again"
    comments = "SELECT yclients_id, comment FROM bookings"
    assert dict(db.execute(comments).fetchall()) == {key: row["comment"] for key, row in api_salon.records.items()}

    for row in api_salon.records.values():
        row["comment"] = row["comment"][:-1] + "ё"
    stand_in.drip_answers, stand_in.drip_seconds, stand_in.drip_bytes = 1, 0.05, 256 * 1024  # in time: read
    assert sync(settings, "records", mode="full").status == "succeeded"
    assert dict(db.execute(comments).fetchall()) == {key: row["comment"] for key, row in api_salon.records.items()}
