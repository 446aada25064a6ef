"""YClients sync against the local stand-in over real HTTP: every row, retried, rate-limited, recorded."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ops.standins.yclients import Salon, YClientsStandIn, generate_salon, yclients_stand_in
from shared.core.settings import Settings
from shared.yclients.sync import SyncFailedError, SyncSummary
from tests.support.booking_loop import COMPANY, sync, sync_settings


@pytest.fixture(scope="module")
def generated_salon() -> Salon:
    return generate_salon(COMPANY, clients=5000, records=3000)


def full_sync(settings: Settings) -> dict[str, SyncSummary]:
    return {
        entity: sync(settings, entity) for entity in ("company", "services", "staff", "schedules", "clients", "records")
    }


def versions(db: psycopg.Connection, table: str) -> dict[Any, str]:
    return dict(db.execute(f"SELECT coalesce(yclients_id, 0) + id * 0, xmin::text FROM {table}").fetchall())


def test_a_full_sync_lands_exactly_the_upstream_rows(
    stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    runs = full_sync(sync_settings(stand_in))
    assert all(run.status == "succeeded" and run.counters.rejected == 0 for run in runs.values())
    assert runs["clients"].counters.pages == 25  # 5,000 clients at 200 a page, no cap
    assert db.execute("SELECT count(*) FROM clients WHERE yclients_id IS NOT NULL").fetchone()[0] == 5000
    assert db.execute("SELECT count(*) FROM bookings WHERE yclients_id IS NOT NULL").fetchone()[0] == 3000
    deleted_upstream = sum(1 for r in api_salon.records.values() if r["deleted"])
    assert (
        db.execute("SELECT count(*) FROM bookings WHERE deleted_at IS NOT NULL AND status = 'cancelled'").fetchone()[0]
        == deleted_upstream
    )
    assert db.execute("SELECT count(*) FROM bookings WHERE client_id IS NULL").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM services").fetchone()[0] == len(api_salon.services)
    assert db.execute("SELECT count(*) FROM staff").fetchone()[0] == 8
    assert db.execute("SELECT count(*) FROM staff_schedules").fetchone()[0] == 8 * 14
    # Quirks were read correctly: numbers as strings, phones as numbers, three date formats.
    sample = api_salon.clients[5_000_003]
    assert isinstance(sample["phone"], int)
    row = db.execute("SELECT phone, first_visit_at, visits_count FROM clients WHERE yclients_id = 5000003").fetchone()
    assert row[0] == f"+{sample['phone']}"
    assert row[1] is not None
    assert db.execute("SELECT count(*) FROM clients WHERE first_visit_at IS NULL").fetchone()[0] == 0
    journal = db.execute(
        "SELECT entity, status, pages, rows_fetched, rows_upserted FROM sync_runs WHERE entity = 'clients'"
    ).fetchone()
    assert journal == ("clients", "succeeded", 25, 5000, 5000)


def test_a_second_run_changes_nothing(stand_in: YClientsStandIn, db: psycopg.Connection) -> None:
    settings = sync_settings(stand_in)
    full_sync(settings)
    before = {table: versions(db, table) for table in ("clients", "bookings")}
    again = full_sync(settings)
    assert {entity: run.counters.upserted for entity, run in again.items()} == dict.fromkeys(again, 0)
    assert all(run.counters.marked_deleted == 0 for run in again.values())
    assert again["records"].mode == "incremental"
    assert {table: versions(db, table) for table in ("clients", "bookings")} == before


def test_a_client_deleted_upstream_is_marked_deleted_not_removed(
    stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    settings = sync_settings(stand_in)
    sync(settings, "clients")
    del api_salon.clients[5_000_010]
    run = sync(settings, "clients")
    assert run.counters.marked_deleted == 1
    row = db.execute("SELECT deleted_at IS NOT NULL FROM clients WHERE yclients_id = 5000010").fetchone()
    assert row == (True,)
    assert db.execute("SELECT count(*) FROM clients WHERE deleted_at IS NULL").fetchone()[0] == 4999


def test_rate_limits_of_both_shapes_and_5xx_are_retried_and_nothing_is_lost(
    stand_in: YClientsStandIn, db: psycopg.Connection
) -> None:
    stand_in.inject(429, "limit", 503, 500, "limit")
    run = sync(sync_settings(stand_in), "clients")
    assert run.counters.fetched == 5000
    assert db.execute("SELECT count(*) FROM clients").fetchone()[0] == 5000
    assert stand_in.count(429) + stand_in.count(299) + stand_in.count(503) + stand_in.count(500) == 5


def test_bad_rows_are_rejected_and_reported_while_the_rest_are_saved(
    stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    api_salon.clients[5_000_001]["phone"] = "не телефон"
    api_salon.clients[5_000_002]["email"] = "not-an-email"
    api_salon.clients[5_000_003]["id"] = "-5"
    api_salon.clients[5_000_004]["first_visit_date"] = "вчера"
    run = sync(sync_settings(stand_in), "clients")
    assert run.counters.rejected == 4
    assert run.counters.upserted == 4996
    reasons = db.execute("SELECT rows_rejected, rejections FROM sync_runs WHERE entity = 'clients'").fetchone()
    assert reasons[0] == 4
    text = " ".join(item["reason"] for item in reasons[1])
    for expected in ("phone: phone is not a number", "email", "id: must be positive", "first_visit_date"):
        assert expected in text
    assert "не телефон" not in text
    assert "not-an-email" not in text
    # A rejected client is still upstream: it must not be marked deleted.
    assert db.execute("SELECT count(*) FROM clients WHERE deleted_at IS NOT NULL").fetchone()[0] == 0


def test_an_invalid_token_fails_the_run_with_a_clear_error(stand_in: YClientsStandIn, db: psycopg.Connection) -> None:
    with pytest.raises(SyncFailedError) as caught:
        sync(sync_settings(stand_in, user_token="wrong"), "company")
    assert "401" in str(caught.value)
    assert "Необходима авторизация" in str(caught.value)
    assert stand_in.count() == 1, "an auth failure is not retried"
    row = db.execute("SELECT status, error FROM sync_runs").fetchone()
    assert row[0] == "failed"
    assert "AuthError" in row[1]


def test_a_failed_run_keeps_its_pages_and_the_next_run_resumes(
    stand_in: YClientsStandIn, db: psycopg.Connection
) -> None:
    settings = sync_settings(stand_in, max_attempts=2)
    outage = {"left": 2}

    def page_five_down(method: str, path: str, query: dict, body: dict) -> tuple[int, dict] | None:
        if path.endswith("/clients/search") and body.get("page") == 5 and outage["left"] > 0:
            outage["left"] -= 1
            return 503, {"success": False, "data": None, "meta": {"message": "down"}}
        return None

    stand_in.override = page_five_down
    with pytest.raises(SyncFailedError):
        sync(settings, "clients")
    assert db.execute("SELECT count(*) FROM clients").fetchone()[0] == 800
    failed = db.execute("SELECT status, pages, cursor FROM sync_runs").fetchone()
    assert failed == ("failed", 4, {"page": 4})
    requests_before = stand_in.count()
    resumed = sync(settings, "clients")
    assert resumed.status == "succeeded"
    assert stand_in.count() - requests_before == 21, "pages 5 to 25 only"
    assert db.execute("SELECT count(*) FROM clients").fetchone()[0] == 5000
    assert resumed.counters.marked_deleted == 0, "a resumed run never marks rows deleted"


def test_fleet_sync_prints_the_runs_figures(stand_in: YClientsStandIn, fleet_env: dict[str, str]) -> None:
    import subprocess
    import sys

    from tests.support.processes import ROOT

    env = {
        **fleet_env,
        "FLEET_YCLIENTS__BASE_URL": stand_in.url,
        "FLEET_YCLIENTS__PARTNER_TOKEN": "partner-token",
        "FLEET_YCLIENTS__USER_TOKEN": "user-token",
        "FLEET_YCLIENTS__REQUESTS_PER_SECOND": "1000",
        "FLEET_YCLIENTS__REQUESTS_PER_MINUTE": "100000",
    }
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "sync", "staff", "--company", str(COMPANY)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"staff for company {COMPANY} (full) succeeded: pages 1, fetched 8, upserted 8" in result.stdout


@pytest.mark.slow
def test_two_worker_processes_syncing_at_once_stay_under_the_rate_limit(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path
) -> None:
    from tests.support.processes import running_worker, wait_until
    from workers.app import app

    salons = [generate_salon(company, clients=3000, records=0, seed=company) for company in (1001, 1002)]
    with yclients_stand_in(*salons) as stand_in:  # the documented limits: 5 a second, 200 a minute
        env = {
            **fleet_env,
            "FLEET_YCLIENTS__BASE_URL": stand_in.url,
            "FLEET_YCLIENTS__PARTNER_TOKEN": "partner-token",
            "FLEET_YCLIENTS__USER_TOKEN": "user-token",
            "FLEET_YCLIENTS__COMPANY_IDS": "[1001, 1002]",
        }
        # Three processes: one is kept for CRM writes (workers/crm_lane.py), so two syncs run at once.
        with running_worker("yclients", env, tmp_path, concurrency=3):
            for company in (1001, 1002):
                app.send_task("workers.yclients.sync_entity", args=("clients", company))
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT count(*) FROM sync_runs WHERE entity = 'clients' AND status <> 'running'"
                    ).fetchone()[0]
                    == 2
                ),
                120,
                "both syncs to finish",
            )
        assert stand_in.count() >= 2 * 16  # two companies, 15 pages of clients each, plus the companies
        assert stand_in.max_in_window(1.0, accepted_only=False) <= 5
        assert stand_in.max_in_window(60.0, accepted_only=False) <= 200
        assert stand_in.count(429) + stand_in.count(299) == 0, "the stand-in never had to refuse a request"
    statuses = db.execute("SELECT status, rows_fetched FROM sync_runs WHERE entity = 'clients'").fetchall()
    assert statuses == [("succeeded", 3000), ("succeeded", 3000)]


def test_a_sync_of_a_company_the_fleet_does_not_serve_is_refused_before_any_request(
    stand_in: YClientsStandIn, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone who can write to the broker can send a sync task: the fleet's tokens read only its own salons."""
    from shared.core.settings import get_settings
    from workers.yclients import sync_entity_task

    monkeypatch.setenv("FLEET_YCLIENTS__BASE_URL", stand_in.url)
    monkeypatch.setenv("FLEET_YCLIENTS__PARTNER_TOKEN", "partner-token")
    monkeypatch.setenv("FLEET_YCLIENTS__USER_TOKEN", "user-token")
    monkeypatch.setenv("FLEET_YCLIENTS__COMPANY_IDS", f"[{COMPANY}]")
    get_settings.cache_clear()
    try:
        refused = sync_entity_task.apply(args=("staff", 1001))
        served = sync_entity_task.apply(args=("staff", COMPANY))
    finally:
        get_settings.cache_clear()
    assert refused.state == "FAILURE"
    assert "company 1001 is not served" in str(refused.result)
    assert served.state == "SUCCESS", served.result
    assert all(f"/{COMPANY}" in path or "companies" in path for _, path, _ in stand_in.requests), stand_in.requests
    reason = db.execute("SELECT reason FROM dead_letters WHERE source = 'task.workers.yclients.sync_entity'").fetchone()
    assert reason is not None
    assert "company 1001 is not served" in reason[0]
