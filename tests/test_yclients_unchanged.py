"""The sync skips rows whose content has not changed since it wrote them (a hash kept with each row), and only
those: a change upstream, a change made locally by any other path, and a rejected row are all seen again."""

from __future__ import annotations

from decimal import Decimal
from hashlib import blake2b
from typing import Any

import psycopg
import pytest
from pydantic_core import to_json

from ops.standins.yclients import Salon, YClientsStandIn, generate_salon
from shared.data import sync_hashes
from shared.data.repositories.calendar import BookingRepository
from shared.yclients.sync import SyncSummary
from tests.support.booking_loop import COMPANY, sync, sync_settings

CLIENTS = 600
RECORDS = 400


@pytest.fixture(scope="module")
def generated_salon() -> Salon:
    return generate_salon(COMPANY, clients=CLIENTS, records=RECORDS)


def sync_all(stand_in: YClientsStandIn) -> dict[str, SyncSummary]:
    settings = sync_settings(stand_in)
    runs = {entity: sync(settings, entity) for entity in ("company", "services", "staff", "clients")}
    runs["records"] = sync(settings, "records", mode="full")
    assert all(run.status == "succeeded" for run in runs.values()), runs
    return runs


def versions(db: psycopg.Connection, table: str) -> dict[Any, str]:
    return dict(db.execute(f"SELECT yclients_id, xmin::text FROM {table} WHERE yclients_id IS NOT NULL").fetchall())


def test_a_second_sync_of_an_unchanged_salon_skips_every_row_and_writes_nothing(
    stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    first = sync_all(stand_in)
    assert {entity: run.counters.unchanged for entity, run in first.items()} == dict.fromkeys(first, 0)
    before = {table: versions(db, table) for table in ("clients", "bookings")}
    again = sync_all(stand_in)
    cancelled = sum(1 for record in api_salon.records.values() if record["deleted"])
    assert again["company"].counters.unchanged == 1
    assert again["services"].counters.unchanged == len(api_salon.services)
    assert again["staff"].counters.unchanged == len(api_salon.staff)
    assert again["clients"].counters.unchanged == CLIENTS
    # A cancelled record is written with the moment the sync saw it cancelled, so it differs every run.
    assert again["records"].counters.unchanged == RECORDS - cancelled
    for entity in ("company", "services", "staff", "clients"):
        assert again[entity].counters.upserted == 0, entity
    assert f"upserted 0, unchanged {CLIENTS}," in again["clients"].render()
    journal = db.execute(
        "SELECT rows_upserted, rows_unchanged FROM sync_runs WHERE entity = 'clients' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert journal == (0, CLIENTS)
    after = {table: versions(db, table) for table in ("clients", "bookings")}
    assert after["clients"] == before["clients"]
    assert {k: v for k, v in after["bookings"].items() if v != before["bookings"][k]}.keys() <= {
        int(record["id"]) for record in api_salon.records.values() if record["deleted"]
    }


def test_a_row_changed_upstream_between_syncs_is_written(
    stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    settings = sync_settings(stand_in)
    sync(settings, "services")
    sync(settings, "clients")
    api_salon.clients[5_000_007]["name"] = "Агата Новикова"
    api_salon.clients[5_000_008]["visits_count"] = 99
    api_salon.services[3]["price_min"] = "1777.00"
    clients = sync(settings, "clients")
    services = sync(settings, "services")
    assert (clients.counters.upserted, clients.counters.unchanged) == (2, CLIENTS - 2)
    assert (services.counters.upserted, services.counters.unchanged) == (1, len(api_salon.services) - 1)
    assert db.execute("SELECT name FROM clients WHERE yclients_id = 5000007").fetchone() == ("Агата Новикова",)
    assert db.execute("SELECT visits_count FROM clients WHERE yclients_id = 5000008").fetchone() == (99,)
    price = db.execute("SELECT price_min FROM services WHERE id = %s", (int(api_salon.services[3]["id"]),)).fetchone()
    assert price == (Decimal("1777.00"),)


def test_rows_changed_locally_are_written_back_by_the_next_sync(
    stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    settings = sync_settings(stand_in)
    sync_all(stand_in)
    assert db.execute("SELECT count(*) FROM clients WHERE sync_hash IS NULL").fetchone() == (0,)
    live = [int(r["id"]) for r in api_salon.records.values() if not r["deleted"]][:2]
    statuses = dict(db.execute("SELECT yclients_id, status FROM bookings WHERE yclients_id = ANY(%s)", (live,)))
    # The fleet's own writes, none of them the sync's merge: a record a webhook reported gone (the salon
    # restored it), a booking cancelled through the repository, an operator's fix by hand, a client removed.
    assert BookingRepository().mark_record_deleted(COMPANY, live[0]) == 1
    (booking_id,) = db.execute("SELECT id FROM bookings WHERE yclients_id = %s", (live[1],)).fetchone()
    BookingRepository().cancel(booking_id)
    service = int(api_salon.services[0]["id"])
    db.execute("UPDATE services SET title = 'исправлено вручную' WHERE id = %s", (service,))
    # And a client marked deleted because it vanished upstream, then listed again unchanged.
    vanished = api_salon.clients.pop(5_000_010)
    assert sync(settings, "clients").counters.marked_deleted == 1
    api_salon.clients[5_000_010] = vanished
    db.execute("DELETE FROM clients WHERE yclients_id = 5000011")

    again = sync_all(stand_in)

    assert again["clients"].counters.upserted == 2
    back = "SELECT count(*) FROM clients WHERE yclients_id IN (5000010, 5000011) AND deleted_at IS NULL"
    assert db.execute(back).fetchone() == (2,)
    assert again["services"].counters.upserted == 1
    assert db.execute("SELECT title FROM services WHERE id = %s", (service,)).fetchone() == (
        api_salon.services[0]["title"],
    )
    restored = db.execute(
        "SELECT yclients_id, status FROM bookings WHERE yclients_id = ANY(%s) AND deleted_at IS NULL", (live,)
    )
    assert dict(restored) == statuses, "YClients' version of both records is written back"
    for table in ("clients", "services", "bookings"):
        unhashed = db.execute(f"SELECT count(*) FROM {table} WHERE sync_hash IS NULL AND deleted_at IS NULL")
        assert unhashed.fetchone() == (0,), table


def test_a_rejected_row_is_rejected_again_on_every_sync(
    stand_in: YClientsStandIn, api_salon: Salon, db: psycopg.Connection
) -> None:
    settings = sync_settings(stand_in)
    api_salon.clients[5_000_002]["email"] = "not-an-email"  # never valid: never stored
    first = sync(settings, "clients")
    assert (first.counters.rejected, first.counters.upserted) == (1, CLIENTS - 1)
    api_salon.clients[5_000_003]["email"] = "also-not-an-email"  # stored valid once, now refused
    second = sync(settings, "clients")
    third = sync(settings, "clients")
    for run in (second, third):
        assert run.counters.rejected == 2
        assert run.counters.unchanged == CLIENTS - 2
        assert run.counters.upserted == 0
        reasons = db.execute("SELECT rows_rejected, rejections FROM sync_runs WHERE id = %s", (run.run_id,)).fetchone()
        assert reasons[0] == 2
        assert sorted(item["id"] for item in reasons[1]) == [5_000_002, 5_000_003]
    held = db.execute(
        "SELECT count(*) FROM sync_rejected_rows WHERE entity = 'clients' AND company_id = %s AND run_id = %s",
        (COMPANY, third.run_id),
    ).fetchone()
    assert held == (2,)
    # The refused version was never written: the stored row keeps what was valid.
    assert db.execute("SELECT email FROM clients WHERE yclients_id = 5000003").fetchone() == (None,)
    assert db.execute("SELECT count(*) FROM clients WHERE yclients_id = 5000002").fetchone() == (0,)


def test_a_rows_hash_is_the_one_earlier_releases_stored() -> None:
    """Stored hashes are compared with the ones the running code makes: a change in how a row is hashed (as
    opposed to what: the model's rules, `HASH_VERSION`) would leave every stored hash stale and make the next
    sync of every salon a full write, unnoticed. The hash of a row is pinned: blake2b, 8 bytes, keyed by the
    table's key, of the row's canonical JSON, read as a little-endian signed bigint."""
    rows = [
        {"company_id": 962302, "yclients_id": 7, "name": "Анна", "phone": "+79110000001", "email": None,
         "discount": Decimal("5.5"), "visits_count": 3},
        {"company_id": 962302, "yclients_id": 8, "name": "Ольга", "phone": None, "email": "o@example.com",
         "discount": Decimal("0"), "visits_count": 0},
    ]  # fmt: skip
    key = sync_hashes.hash_key("clients", None)
    recipe = [
        int.from_bytes(blake2b(to_json(row), digest_size=8, key=key).digest(), "little", signed=True) for row in rows
    ]
    assert sync_hashes.row_hashes(rows, key) == recipe == [6757736184166930994, 1840253126485177288]
    unserialisable = {**rows[0], "name": object()}
    assert sync_hashes.row_hashes([rows[1], unserialisable], key) == [recipe[1], None], "row by row, one refused"
