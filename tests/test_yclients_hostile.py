"""The sync against the odd answers the real API and the proxies before it give: it never wipes, corrupts,
loops or silently drops a salon's data, and every failure names its cause."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import psycopg
import pytest
import sentry_sdk

from ops.standins.telegram import TelegramStandIn
from ops.standins.yclients import Salon, YClientsStandIn, generate_salon
from shared.core.settings import Settings
from shared.yclients.client import retry_after_seconds
from shared.yclients.ratelimit import FleetRateLimiter
from shared.yclients.sync import SyncFailedError
from tests.support.booking_loop import settings_for, sync
from tests.support.processes import ROOT

COMPANY = 962302
TOKENS = ("partner-token", "user-token")


@pytest.fixture(scope="module")
def generated_salon() -> Salon:
    return generate_salon(COMPANY, clients=450, records=200)


def failed(settings: Settings, entity: str, **options: Any) -> str:
    with pytest.raises(SyncFailedError) as caught:
        sync(settings, entity, **options)
    return str(caught.value)


def live(db: psycopg.Connection, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table} WHERE deleted_at IS NULL").fetchone()[0]


def answer_for(path_end: str, answer: tuple) -> Any:
    def override(method: str, path: str, query: dict, body: dict) -> tuple | None:
        return answer if path.rstrip("/").endswith(path_end) else None

    return override


def no_token_stored(db: psycopg.Connection) -> None:
    stored = json.dumps(db.execute("SELECT coalesce(json_agg(r), '[]') FROM sync_runs r").fetchone()[0])
    stored += json.dumps(db.execute("SELECT coalesce(json_agg(r), '[]') FROM sync_rejected_rows r").fetchone()[0])
    for token in TOKENS:
        assert token not in stored


@pytest.fixture
def synced(stand_in: YClientsStandIn, db: psycopg.Connection) -> Settings:
    settings = settings_for(stand_in)
    for entity in ("company", "services", "staff", "clients"):
        sync(settings, entity)
    sync(settings, "records", mode="full")
    return settings


# ---- deletion only on proof ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entity", "path", "table"), [("services", "/services", "services"), ("staff", "/staff", "staff")]
)
def test_data_null_fails_the_run_and_keeps_every_row(
    synced: Settings, stand_in: YClientsStandIn, db: psycopg.Connection, entity: str, path: str, table: str
) -> None:
    before = live(db, table)
    stand_in.override = answer_for(path, (200, {"success": True, "data": None, "meta": []}))
    error = failed(synced, entity)
    assert "data is NoneType, not a list" in error
    assert live(db, table) == before
    assert db.execute("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone() == ("failed",)
    no_token_stored(db)


@pytest.mark.parametrize(
    ("entity", "path", "table", "meta"),
    [
        ("services", "/services", "services", {"total_count": 0}),
        ("staff", "/staff", "staff", []),
        ("clients", "/clients/search", "clients", {"total_count": 0}),
        ("records", f"/records/{COMPANY}", "bookings", {"page": 1, "total_count": 0}),
    ],
)
def test_an_empty_answer_never_wipes_the_salon_unless_an_operator_confirms(
    synced: Settings, stand_in: YClientsStandIn, db: psycopg.Connection, entity: str, path: str, table: str, meta: Any
) -> None:
    before = live(db, table)
    assert before > 0
    stand_in.override = answer_for(path, (200, {"success": True, "data": [], "meta": meta}))
    mode = {"mode": "full"} if entity == "records" else {}
    error = failed(synced, entity, **mode)
    assert f"refused to mark {before} of {before} {table} rows deleted" in error
    assert "the answer listed none" in error
    assert live(db, table) == before
    assert "--allow-mass-delete" in db.execute("SELECT error FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    confirmed = sync(synced, entity, allow_mass_delete=True, **mode)
    assert confirmed.counters.marked_deleted == before
    assert live(db, table) == 0


def test_more_than_the_set_share_is_refused_and_alerted_until_an_operator_confirms(
    synced: Settings,
    stand_in: YClientsStandIn,
    api_salon: Salon,
    db: psycopg.Connection,
    fleet_env: dict[str, str],
    recorded_events: list[dict[str, Any]],
    telegram: TelegramStandIn,
) -> None:
    for client_id in list(api_salon.clients)[:3]:
        del api_salon.clients[client_id]
    assert sync(synced, "clients").counters.marked_deleted == 3, "a few deletions go through"
    for client_id in list(api_salon.clients)[:200]:
        del api_salon.clients[client_id]
    error = failed(synced, "clients")
    assert "refused to mark 200 of 447 clients rows deleted (45%, limit 30%)" in error
    assert live(db, "clients") == 447
    sentry_sdk.flush()
    alert = [event for event in recorded_events if event.get("message") == "mass delete refused: clients"]
    assert len(alert) == 1
    assert alert[0]["tags"]["company_id"] == str(COMPANY)
    assert alert[0]["level"] == "error"
    told = [f"🔴 YClients sync of company {COMPANY}: refused to mark 200 of 447 clients rows deleted"]
    assert [text[: len(told[0])] for text in telegram.texts()] == told

    env = {
        **fleet_env,
        **telegram.env(),
        "FLEET_YCLIENTS__BASE_URL": stand_in.url,
        "FLEET_YCLIENTS__PARTNER_TOKEN": TOKENS[0],
        "FLEET_YCLIENTS__USER_TOKEN": TOKENS[1],
        "FLEET_YCLIENTS__REQUESTS_PER_SECOND": "1000",
        "FLEET_YCLIENTS__REQUESTS_PER_MINUTE": "100000",
    }
    command = [sys.executable, "-m", "workers.cli", "sync", "clients", "--company", str(COMPANY)]
    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "--allow-mass-delete" in refused.stderr
    assert len(telegram.texts()) == 1, "the same refusal again is not news to the operators"
    confirmed = subprocess.run(
        [*command, "--allow-mass-delete"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert confirmed.returncode == 0, confirmed.stderr
    assert "marked deleted 200" in confirmed.stdout
    assert live(db, "clients") == 247


def test_short_pages_without_total_count_neither_end_the_walk_nor_prove_deletion(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    rows = list(api_salon.clients.values())

    def short_pages(method: str, path: str, query: dict, body: dict) -> tuple | None:
        if not path.endswith("/clients/search"):
            return None
        page = body["page"]
        chunk = rows[(page - 1) * 150 : page * 150]  # 150 a page when 200 were asked, and no total_count
        return 200, {"success": True, "data": chunk, "meta": []}

    stand_in.override = short_pages
    del api_salon.clients[int(rows[-1]["id"])]
    run = sync(synced, "clients")
    assert run.counters.fetched == 450, "every short page was read, up to the empty one"
    assert run.counters.marked_deleted == 0
    assert run.counters.deletion == "skipped: without total_count, a short page came before the end"


def test_full_pages_without_total_count_ending_on_an_empty_page_prove_deletion(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    del api_salon.clients[5_000_001]
    rows = list(api_salon.clients.values())[:400]  # two full pages of 200, then an empty one
    for client_id in list(api_salon.clients)[400:]:
        del api_salon.clients[client_id]
    for client_id in range(5_000_401, 5_000_451):
        db.execute("UPDATE clients SET deleted_at = now() WHERE yclients_id = %s", (client_id,))

    def no_total(method: str, path: str, query: dict, body: dict) -> tuple | None:
        if not path.endswith("/clients/search"):
            return None
        page = body["page"]
        return 200, {"success": True, "data": rows[(page - 1) * 200 : page * 200], "meta": []}

    stand_in.override = no_total
    run = sync(synced, "clients")
    assert run.counters.marked_deleted == 1
    assert db.execute("SELECT deleted_at IS NOT NULL FROM clients WHERE yclients_id = 5000001").fetchone() == (True,)


def test_pages_that_drift_during_the_walk_prove_nothing(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    rows = list(api_salon.clients.values())

    def drifting(method: str, path: str, query: dict, body: dict) -> tuple | None:
        if not path.endswith("/clients/search"):
            return None
        page = body["page"]
        start = (page - 1) * 200 + (1 if page > 1 else 0)  # a client removed mid-walk shifted the later pages
        return 200, {"success": True, "data": rows[start : start + 200], "meta": {"total_count": len(rows)}}

    stand_in.override = drifting
    run = sync(synced, "clients")
    assert run.counters.marked_deleted == 0
    assert run.counters.deletion == "skipped: the walk saw 449 distinct ids, total_count says 450"
    assert live(db, "clients") == 450, "the client the shift hid is not taken for deleted"


def test_a_server_that_ignores_page_does_not_loop(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    first_page = list(api_salon.clients.values())[:200]
    stand_in.override = answer_for(
        "/clients/search", (200, {"success": True, "data": first_page, "meta": {"total_count": 450}})
    )
    before = stand_in.count()
    run = sync(synced, "clients")
    assert stand_in.count() - before == 2, "the second page repeated the first: the walk stopped there"
    assert run.counters.marked_deleted == 0
    assert "repeated page" in run.counters.deletion


def test_a_huge_total_count_with_empty_pages_ends_at_the_first_empty_page(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    rows = list(api_salon.clients.values())

    def bloated(method: str, path: str, query: dict, body: dict) -> tuple | None:
        if not path.endswith("/clients/search"):
            return None
        page = body["page"]
        return 200, {"success": True, "data": rows[(page - 1) * 200 : page * 200], "meta": {"total_count": 10**8}}

    stand_in.override = bloated
    before = stand_in.count()
    run = sync(synced, "clients")
    assert stand_in.count() - before == 4, "three pages of rows, then the empty page that ends it"
    assert run.counters.marked_deleted == 0
    assert run.counters.deletion == "skipped: the walk saw 450 distinct ids, total_count says 100000000"


def test_a_walk_past_its_deadline_fails_naming_it(synced: Settings, stand_in: YClientsStandIn, db: psycopg.Connection):
    error = failed(settings_for(stand_in, run_deadline_seconds=0.001), "clients")
    assert "DeadlineExceededError" in error
    assert "deadline passed" in db.execute("SELECT error FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0]


# ---- every row on its own ---------------------------------------------------------------------------
BAD_VALUES = [
    ("clients", 5_000_011, "sold_amount", float("nan"), "sold_amount: not a finite amount"),
    ("clients", 5_000_012, "sold_amount", float("inf"), "sold_amount: not a finite amount"),
    ("clients", 5_000_013, "sold_amount", "Infinity", "sold_amount: not an amount"),
    ("clients", 5_000_014, "sold_amount", "1e30", "sold_amount: not an amount"),
    ("clients", 5_000_015, "discount", 1e30, "discount: out of range"),
    ("clients", 5_000_016, "first_visit_date", "9999-12-31 23:59:59", "first_visit_date: out of range"),
    ("clients", 5_000_017, "name", "Анна\x00", "name: contains a NUL character"),
    ("clients", 5_000_018, "name", "Анна\ud800", "name: contains a lone UTF-16 surrogate"),
    ("clients", 5_000_019, "id", "1e3000000", "id: not a whole number"),
    ("clients", 5_000_020, "id", 10**400, "id: out of range"),
    ("clients", 5_000_021, "visits_count", "9" * 1000, "visits_count: not a whole number"),
    ("clients", 5_000_022, "name", "я" * 20_000, "name: longer than 10000 characters"),
    ("clients", 5_000_023, "phone", {"number": 1}, "phone: not text"),
    ("records", 9_000_011, "seance_length", 10**12, "seance_length: longer than a day"),
    ("records", 9_000_012, "last_change_date", "9999-12-31 23:59:59", "last_change_date: out of range"),
    ("records", 9_000_013, "services", "все", "services: not a list"),
    ("records", 9_000_014, "staff_id", True, "staff_id: not a whole number"),
]


def test_each_bad_value_rejects_its_row_only_and_is_kept_with_the_raw_value(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    for entity, row_id, field, value, _ in BAD_VALUES:
        rows = api_salon.clients if entity == "clients" else api_salon.records
        rows[row_id][field] = value
    clients = sync(synced, "clients")
    records = sync(synced, "records", mode="full")
    expected_clients = sum(1 for entity, *_ in BAD_VALUES if entity == "clients")
    assert (clients.status, clients.counters.rejected) == ("succeeded", expected_clients)
    assert (records.status, records.counters.rejected) == ("succeeded", len(BAD_VALUES) - expected_clients)
    assert live(db, "clients") == 450, "a rejected row has not vanished upstream: nothing is marked deleted"
    assert clients.counters.deletion == "skipped: 2 listed row(s) had no usable id and may be any of the stored ones"
    kept = db.execute("SELECT entity, row_key, reason, raw FROM sync_rejected_rows").fetchall()
    assert len(kept) == len(BAD_VALUES)
    for entity, row_id, field, _, reason in BAD_VALUES:
        if field == "id":  # its id is the bad value: found by its reason, its name kept in the raw row
            found = [k for k in kept if k[0] == entity and k[2].startswith(reason)]
            assert found[0][3]["name"] == api_salon.clients[row_id]["name"]
        else:
            found = [k for k in kept if k[0] == entity and k[1] == f"id:{row_id}"]
        assert len(found) == 1, (entity, row_id)
        assert found[0][2].startswith(reason), (found[0][2], reason)
    no_token_stored(db)


def test_a_row_that_comes_right_later_leaves_the_rejected_list(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    api_salon.clients[5_000_030]["name"] = "Анна\x00"
    sync(synced, "clients")
    assert db.execute("SELECT count(*) FROM sync_rejected_rows").fetchone()[0] == 1
    api_salon.clients[5_000_030]["name"] = "Анна"
    sync(synced, "clients")
    assert db.execute("SELECT count(*) FROM sync_rejected_rows").fetchone()[0] == 0


def test_a_record_waits_for_its_staff_member_and_is_saved_after_the_next_staff_sync(
    synced: Settings, stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    api_salon.staff.append(copy.deepcopy(api_salon.staff[0]) | {"id": 77, "name": "Новая Мастер", "services_links": []})
    api_salon.records[9_000_001]["staff_id"] = 77
    api_salon.records[9_000_001]["last_change_date"] = datetime.now(UTC).isoformat(timespec="seconds")
    records = sync(synced, "records")  # incremental: this record changed, its staff member is new
    assert records.counters.pending == 1
    assert db.execute("SELECT staff_id FROM bookings WHERE yclients_id = 9000001").fetchone() != (77,)
    assert db.execute("SELECT reason FROM sync_pending_records").fetchone() == ("staff member not synced yet",)
    api_salon.records[9_000_001]["last_change_date"] = api_salon.records[9_000_002]["last_change_date"]
    later = sync(synced, "records")  # later incremental runs no longer list it: it must not be lost
    assert later.counters.fetched == 0
    sync(synced, "staff")
    assert db.execute("SELECT staff_id FROM bookings WHERE yclients_id = 9000001").fetchone() == (77,)
    assert db.execute("SELECT count(*) FROM sync_pending_records").fetchone()[0] == 0


# ---- the client: Retry-After, HTML, limits ---------------------------------------------------------
def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert retry_after_seconds("99999999") == 300, "capped"
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_pauses_every_process_until_it_passes(
    synced: Settings, stand_in: YClientsStandIn, db: psycopg.Connection, clean_redis: str, form: str
) -> None:
    asked = {"done": False}

    def limited_once(method: str, path: str, query: dict, body: dict) -> tuple | None:
        if asked["done"]:
            return None
        asked["done"] = True
        when = "2" if form == "seconds" else format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
        return 429, {"success": False, "data": None, "meta": {"message": "Too Many Requests"}}, {"Retry-After": when}

    stand_in.override = limited_once
    other_process = FleetRateLimiter(clean_redis, 1000, 100_000)
    started = time.monotonic()
    run = sync(synced, "company")
    assert run.status == "succeeded"
    assert time.monotonic() - started >= 1.0, "the retry waited for the pause the API asked for"
    times = [t for t, path, _ in stand_in.requests[-2:]]
    assert times[1] - times[0] >= 1.0
    assert other_process.paused_for() == 0, "the pause has passed for every process"


def test_another_process_waits_out_the_pause(stand_in: YClientsStandIn, clean_redis: str) -> None:
    one, other = FleetRateLimiter(clean_redis, 1000, 100_000), FleetRateLimiter(clean_redis, 1000, 100_000)
    one.pause(1.0)
    assert 0.5 < other.paused_for() <= 1.0
    assert other.acquire() >= 0.5


def test_requests_of_every_process_are_spaced_never_sent_a_second_at_a_time(clean_redis: str) -> None:
    """Five a second allowed: eight requests from two processes leave a quarter of a second apart (1.75 s from
    the first to the last), where a window of a second would send four at once and four more a second later,
    and any delay of the first four on their way would put more than five into one second at the API."""
    limiters = [FleetRateLimiter(clean_redis, 5, 1000), FleetRateLimiter(clean_redis, 5, 1000)]
    started = time.monotonic()
    threads = [threading.Thread(target=lambda lim=limiter: [lim.acquire() for _ in range(4)]) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert time.monotonic() - started >= 1.75


def test_an_html_page_is_retried_and_a_lasting_one_fails_the_run_naming_it(
    synced: Settings, stand_in: YClientsStandIn, db: psycopg.Connection
) -> None:
    html = (200, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
    left = {"n": 1}

    def once(method: str, path: str, query: dict, body: dict) -> tuple | None:
        if left["n"] > 0:
            left["n"] -= 1
            return html
        return None

    stand_in.override = once
    assert sync(synced, "staff").status == "succeeded"
    stand_in.override = answer_for("/staff", html)
    error = failed(synced, "staff")
    assert "answer is not JSON (200, text/html)" in error
    assert stand_in.count(299) >= 3, "retried up to max_attempts"
    no_token_stored(db)
