"""The reconciliation against the YClients stand-in and a real PostgreSQL: every way a chat booking and its
record can disagree once webhooks are lost and operations end unseen is repaired by the rule "YClients holds
the truth about records; our side keeps what the client was told", and each repair is recorded once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ops.standins.yclients import YClientsStandIn
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import load_settings
from shared.health.checks import check_crm
from shared.yclients.client import YClientsClient, make_client
from shared.yclients.reconcile import Reconciled, reconcile
from tests.support.booking_loop import COMPANY, sync_settings
from tests.support.processes import ROOT


@pytest.fixture
def yclients(loop_stand_in: YClientsStandIn) -> Iterator[YClientsClient]:
    open_process_pool(role="test", max_size=3, wait=True)
    client = make_client(sync_settings(loop_stand_in))
    yield client
    client.close()
    close_process_pool()


class Salon:
    """Bookings made as the chat makes them, and records as YClients holds them."""

    def __init__(self, stand_in: YClientsStandIn, db: psycopg.Connection) -> None:
        self.stand_in, self.db, self.n = stand_in, db, 0
        salon = stand_in.salons[COMPANY]
        self.service = int(salon.services[0]["id"])
        self.client = db.execute(
            "INSERT INTO clients (company_id, name, phone) VALUES (%s, 'Анна', '+79110004455') RETURNING id",
            (COMPANY,),
        ).fetchone()[0]

    def slot(self) -> tuple[int, datetime]:
        self.n += 1
        staff = int(self.stand_in.salons[COMPANY].staff[self.n % 8]["id"])
        start = (datetime.now(UTC) + timedelta(days=2 + self.n)).replace(hour=9, minute=0, second=0, microsecond=0)
        return staff, start

    def booking(self, staff: int, start: datetime, *, status: str, crm_state: str, record: int | None = None) -> int:
        return self.db.execute(
            "INSERT INTO bookings (company_id, client_id, staff_id, starts_at, ends_at, source, status, crm_state,"
            " yclients_id) VALUES (%s, %s, %s, %s, %s, 'assistant', %s, %s, %s) RETURNING id",
            (COMPANY, self.client, staff, start, start + timedelta(hours=1), status, crm_state, record),
        ).fetchone()[0]

    def record(self, staff: int, start: datetime, booking: int | None) -> int:
        record = self.stand_in.book_in_widget(COMPANY, staff, start, self.service, "+79110004455", "Анна")
        assert record is not None
        if booking is not None:
            with self.stand_in.lock:
                self.stand_in.salons[COMPANY].records[record]["api_id"] = f"fleet-booking-{booking}"
        return record

    def live(self, record: int) -> bool:
        return any(int(row["id"]) == record for row in self.stand_in.calendar(COMPANY))

    def state(self, booking: int) -> tuple[str, str, int | None]:
        return self.db.execute(
            "SELECT status, crm_state, yclients_id FROM bookings WHERE id = %s", (booking,)
        ).fetchone()

    def repairs(self) -> list[tuple[int, str, str]]:
        return self.db.execute("SELECT booking_id, found, repair FROM crm_repairs ORDER BY id").fetchall()


def test_every_disagreement_is_repaired_by_the_rule_and_recorded_once(
    loop_stand_in: YClientsStandIn, db: psycopg.Connection, yclients: YClientsClient, fleet_env: dict[str, str]
) -> None:
    salon = Salon(loop_stand_in, db)
    settings = sync_settings(loop_stand_in).yclients

    # The client was told the booking failed; its create had reached YClients after all.
    staff, start = salon.slot()
    given_up = salon.booking(staff, start, status="cancelled", crm_state="failed")
    stray = salon.record(staff, start, given_up)
    # The client cancelled; the delete never reached YClients.
    staff, start = salon.slot()
    cancelled_record = salon.record(staff, start, None)
    cancelled = salon.booking(staff, start, status="cancelled", crm_state="synced", record=cancelled_record)
    # The salon deleted the visit; its webhook was lost.
    staff, start = salon.slot()
    gone_record = salon.record(staff, start, None)
    vanished = salon.booking(staff, start, status="confirmed", crm_state="synced", record=gone_record)
    loop_stand_in.cancel_in_widget(COMPANY, gone_record)
    # A booking waiting for its record, whose operation was lost, and whose record exists.
    staff, start = salon.slot()
    waiting = salon.booking(staff, start, status="confirmed", crm_state="pending")
    waiting_record = salon.record(staff, start, waiting)
    # A booking waiting with no operation and no record at all.
    staff, start = salon.slot()
    orphan = salon.booking(staff, start, status="confirmed", crm_state="pending")
    # In agreement: left alone.
    staff, start = salon.slot()
    fine_record = salon.record(staff, start, None)
    fine = salon.booking(staff, start, status="confirmed", crm_state="synced", record=fine_record)
    # Still carried by its operation: not judged, although it disagrees now.
    staff, start = salon.slot()
    in_flight = salon.booking(
        staff, start, status="cancelled", crm_state="synced", record=salon.record(staff, start, None)
    )
    db.execute(
        "INSERT INTO crm_operations (company_id, booking_id, kind) VALUES (%s, %s, 'cancel')", (COMPANY, in_flight)
    )

    result = reconcile(yclients, settings, COMPANY)

    assert result == Reconciled(checked=6, found=5, repaired=4, left=1, unproven=None)
    assert not salon.live(stray), "a record the client was told does not exist is still in the salon's calendar"
    assert not salon.live(cancelled_record), "a visit the client cancelled is still in the salon's calendar"
    assert salon.state(vanished)[:2] == ("cancelled", "vanished"), "the booking still holds a deleted record's time"
    assert salon.state(waiting) == ("confirmed", "synced", waiting_record)
    assert salon.state(orphan) == ("confirmed", "pending", None)
    assert salon.state(fine) == ("confirmed", "synced", fine_record)
    assert salon.live(fine_record)
    assert salon.state(in_flight)[0] == "cancelled"
    assert len(loop_stand_in.calendar(COMPANY)) == 3, "the fine, the linked and the in-flight records"
    repaired = {booking: repair for booking, _, repair in salon.repairs()}
    assert repaired[given_up] == repaired[cancelled] == "deleted the record in YClients"
    assert repaired[waiting] == "linked"
    assert repaired[orphan].startswith("left:")
    assert set(repaired) == {given_up, cancelled, vanished, waiting, orphan}

    crm = check_crm(load_settings())
    assert (crm.details["disagreements_repaired_last_day"], crm.details["disagreements_left_last_day"]) == (4, 1)
    assert crm.status == "warning"
    assert any("need an operator" in problem for problem in crm.problems)
    listed = subprocess.run(
        [sys.executable, "-m", "workers.cli", "crm", "--repairs"],
        cwd=ROOT,
        env=fleet_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert f"booking {orphan} record None: a booking waits for YClients" in listed.stdout
    assert listed.stdout.count("deleted the record in YClients") == 2

    again = reconcile(yclients, settings, COMPANY)
    assert (again.found, again.repaired, again.left) == (1, 0, 1), "only the orphan still disagrees"
    assert len(salon.repairs()) == 5, "a disagreement left to an operator is recorded once, not at every run"


def test_a_walk_that_cannot_prove_it_saw_everything_marks_nothing_vanished(
    loop_stand_in: YClientsStandIn, db: psycopg.Connection, yclients: YClientsClient
) -> None:
    salon = Salon(loop_stand_in, db)
    staff, start = salon.slot()
    record = salon.record(staff, start, None)
    booking = salon.booking(staff, start, status="confirmed", crm_state="synced", record=record)
    loop_stand_in.cancel_in_widget(COMPANY, record)
    loop_stand_in.inflate_total_count = 500  # the salon claims far more records than the pages hold
    result = reconcile(yclients, sync_settings(loop_stand_in).yclients, COMPANY)
    assert result.unproven is not None
    assert (result.found, result.repaired) == (0, 0)
    assert salon.state(booking) == ("confirmed", "synced", record)
    loop_stand_in.inflate_total_count = 0
    assert reconcile(yclients, sync_settings(loop_stand_in).yclients, COMPANY).repaired == 1
    assert salon.state(booking)[:2] == ("cancelled", "vanished")
