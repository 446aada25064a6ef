"""Reconciliation: the chat's own bookings compared with the salon's calendar in YClients, and every
disagreement repaired by one rule: YClients holds the truth about records; our side keeps what the client was
told. Webhooks get lost and CRM operations end in ways nobody saw; this is the net under both.

What it repairs (each repair recorded in `crm_repairs`, shown by `/health/crm`):

- a booking that ended (cancelled by the client, given up, refused) has a live record in YClients: the record
  is deleted, since the client was told there is no visit;
- an active booking's record is gone from YClients, in a walk proven complete: the booking is marked vanished
  and frees its time (the salon deleted the visit; a webhook that said so was lost);
- an active booking waits for its record with no operation carrying it: linked to the record with our
  `api_id` if there is one, else left to an operator (`left:`), noted once.

A booking that a CRM operation is still carrying is its operation's to settle, and is not judged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.core.settings import YClientsSettings
from shared.data.repositories.calendar import BookingRepository
from shared.data.repositories.catalogue import CompanyRepository
from shared.data.repositories.crm_operations import booking_of
from shared.data.repositories.crm_repairs import CrmRepairRepository
from shared.yclients import rows as convert
from shared.yclients.client import Walk, YClientsClient, YClientsError, record_gone

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    """What one salon's reconciliation saw and did."""

    checked: int = 0  # the fleet's bookings compared
    found: int = 0  # disagreements
    repaired: int = 0
    left: int = 0  # disagreements left to an operator
    unproven: str | None = None  # why a record missing from the walk proves nothing this time


@dataclass(frozen=True)
class Calendar:
    """The salon's live records in the window, by id, and ours by the booking their `api_id` names."""

    live: set[int]
    ours: dict[int, int]  # booking id -> record id
    unproven: str | None


def read_calendar(client: YClientsClient, company_id: int, zone: ZoneInfo, first: date, last: date) -> Calendar:
    """Every record of the days from `first` to `last`, with the proof (or not) that the walk saw them all."""
    params = {"start_date": first.isoformat(), "end_date": last.isoformat()}
    walk = Walk()
    live: set[int] = set()
    ours: dict[int, int] = {}
    unreadable = 0
    deadline = time.monotonic() + client.settings.run_deadline_seconds
    for page in client.record_pages(company_id, params, walk=walk, deadline=deadline):
        for raw in page.rows:
            try:
                seen = convert.record(company_id, raw if isinstance(raw, dict) else {}, zone)
            except convert.RowError:
                unreadable += 1
                continue
            if seen["deleted_at"] is not None:
                continue
            live.add(seen["yclients_id"])
            booking = booking_of(raw.get("api_id"))
            if booking is not None:
                ours[booking] = seen["yclients_id"]
    unproven = walk.missing_proof() or (f"{unreadable} record(s) could not be read" if unreadable else None)
    return Calendar(live, ours, unproven)


def reconcile(client: YClientsClient, settings: YClientsSettings, company_id: int) -> Reconciled:
    """Compare one salon's chat bookings from yesterday to the end of the synced window with YClients."""
    company = CompanyRepository().find_one({"id": company_id})
    zone = ZoneInfo((company or {}).get("timezone_name") or "Europe/Moscow")
    today = datetime.now(zone).date()
    first_day, last_day = today - timedelta(days=1), today + timedelta(days=settings.records_days_ahead)
    calendar = read_calendar(client, company_id, zone, first_day, last_day)
    first = datetime.combine(first_day, datetime.min.time(), zone)
    last = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), zone)
    result = Reconciled(unproven=calendar.unproven)
    bookings, repairs = BookingRepository(), CrmRepairRepository()
    for booking in bookings.ours_to_reconcile(company_id, first, last):
        result.checked += 1
        linked = booking["yclients_id"] if booking["yclients_id"] in calendar.live else None
        record_id = linked or calendar.ours.get(booking["id"])
        active = booking["status"] != "cancelled"
        if not active and record_id is not None:
            found = f"a live record for a booking that ended ({booking['crm_state']})"
            result.found += 1
            try:
                client.write("DELETE", f"record/{company_id}/{record_id}")
            except YClientsError as exc:
                if not record_gone(exc):
                    repairs.record(company_id, booking["id"], record_id, found, f"left: the delete failed: {exc}")
                    result.left += 1
                    continue
            repairs.record(company_id, booking["id"], record_id, found, "deleted the record in YClients")
            result.repaired += 1
        elif active and booking["yclients_id"] is not None and linked is None:
            if calendar.unproven is not None:
                continue  # a walk that may have missed it proves nothing
            result.found += 1
            bookings.release(booking["id"], "vanished")
            repairs.record(
                company_id,
                booking["id"],
                booking["yclients_id"],
                "the booking's record is gone in YClients",
                "marked the booking vanished; its time is free",
            )
            result.repaired += 1
        elif active and booking["yclients_id"] is None and booking["crm_state"] == "pending":
            result.found += 1
            if record_id is not None:
                bookings.link_to_record(booking["id"], company_id, record_id)
                repairs.record(company_id, booking["id"], record_id, "a waiting booking's record exists", "linked")
                result.repaired += 1
            else:
                found = "a booking waits for YClients with no operation carrying it"
                if not repairs.noted(booking["id"], found):  # once, not at every run
                    repairs.record(
                        company_id,
                        booking["id"],
                        None,
                        found,
                        "left: book it in YClients, or cancel it with the client",
                    )
                result.left += 1
    if result.found:
        log.warning(
            "reconciliation of company %s: %s of %s bookings disagreed with YClients, %s repaired, %s left",
            company_id,
            result.found,
            result.checked,
            result.repaired,
            result.left,
        )
    return result
