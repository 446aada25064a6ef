"""The records sync: bookings made in YClients (any source: the widget, the administrators, our own pushes)
read page by page into `bookings`, their clients linked, records of unknown staff held until staff syncs."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.data.repositories import crm_operations
from shared.data.repositories.calendar import BookingRepository
from shared.data.repositories.catalogue import ServiceRepository, StaffRepository
from shared.data.repositories.people import ClientRepository
from shared.data.repositories.sync_held_rows import SyncPendingRecordRepository, SyncRejectedRowRepository
from shared.data.repositories.sync_runs import SyncRunRepository
from shared.data.repositories.vanished import Vanished
from shared.data.repository import Row
from shared.yclients import rows as convert
from shared.yclients.client import Walk
from shared.yclients.saving import RunCounters, convert_one, phone_or_none, raw_ids, save

log = logging.getLogger(__name__)


class RecordsSync:
    """The records part of `EntitySync` (which provides the client, settings, company and run bookkeeping)."""

    # records --------------------------------------------------------------------------------------
    def _sync_records(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        zone = self.zone()
        today = datetime.now(zone).date()
        first = today - timedelta(days=self.settings.records_days_back)
        last = today + timedelta(days=self.settings.records_days_ahead)
        params: dict[str, Any] = {"start_date": first.isoformat(), "end_date": last.isoformat()}
        previous = SyncRunRepository().last_success(self.company_id, "records")
        if mode == "incremental" and previous is not None:
            changed_after = previous - timedelta(minutes=self.settings.incremental_overlap_minutes)
            params["changed_after"] = changed_after.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S")
        start_page = SyncRunRepository().resume_page(self.company_id, "records", run_id)
        seen: list[int] = []
        walk = Walk()
        pages = self.client.record_pages(
            self.company_id, params, start_page=start_page, walk=walk, deadline=self.deadline
        )
        for page in pages:
            self._save_records(page.rows, zone, c, c.fetched)
            c.fetched += len(page.rows)
            seen += raw_ids(page.rows)
            self._page_done(run_id, c, page, "records")
        self._cursor = None  # the walk is over: a failure from here on is not resumed past the last page
        self._shortfall = walk.shortfall()  # an incremental walk too must read every change it was told of
        if mode != "full":
            return  # an incremental answer lists only what changed: it proves nothing about what is gone
        self._delete_vanished(
            c,
            Vanished(
                BookingRepository(),
                {
                    "company_id": self.company_id,
                    "starts_at__gte": datetime.combine(first, datetime.min.time(), zone),
                    "starts_at__lt": datetime.combine(last + timedelta(days=1), datetime.min.time(), zone),
                },
                ("yclients_id",),
                seen,
            ),
            listed=c.fetched,
            proof_missing=walk.missing_proof(),
            unidentified=c.fetched - len(seen),
        )

    def _save_records(self, raw_rows: list[Any], zone: ZoneInfo, c: RunCounters, offset: int) -> list[int]:
        """Convert and save records; those whose staff member is unknown wait as pending. Returns saved ids."""
        staff = {row["id"] for row in StaffRepository().find_many({"company_id": self.company_id})}
        services = {row["id"] for row in ServiceRepository().find_many({"company_id": self.company_id})}
        pending: list[tuple[int, str, Any]] = []
        bookings = self._bookings_of(raw_rows, zone, staff, services, c, offset, pending)
        save(BookingRepository(), bookings, c, conflict=("company_id", "yclients_id"))
        saved = [booking["yclients_id"] for booking in bookings]
        SyncRejectedRowRepository().clear(self.company_id, "records", saved)
        SyncPendingRecordRepository().hold(self.company_id, pending)
        SyncPendingRecordRepository().release(self.company_id, saved)
        c.pending += len(pending)
        return saved

    def _retry_pending_records(self, c: RunCounters) -> None:
        """After staff or services change, records that waited for them are tried again."""
        waiting = SyncPendingRecordRepository().waiting(self.company_id)
        if waiting:
            retry = RunCounters()
            saved = self._save_records(waiting, self.zone(), retry, 0)
            c.upserted += retry.upserted
            log.info(
                "pending records of company %s: %s saved, %s still waiting", self.company_id, len(saved), retry.pending
            )

    def _bookings_of(
        self,
        raw_rows: list[Any],
        zone: ZoneInfo,
        staff: set[int],
        services: set[int],
        c: RunCounters,
        offset: int,
        pending: list[tuple[int, str, Any]],
    ) -> list[Row]:
        """Records as bookings, with their clients upserted first and linked by local id."""
        bookings: list[Row] = []
        clients: dict[int, Row] = {}
        for index, raw in enumerate(raw_rows, offset):
            booking = convert_one(raw, lambda r: convert.record(self.company_id, r, zone), c, index)
            if booking is None:
                continue
            ours = crm_operations.booking_of(raw.get("api_id"))
            if ours is not None:
                BookingRepository().link_to_record(ours, self.company_id, booking["yclients_id"])
            if booking["staff_id"] not in staff:
                pending.append((booking["yclients_id"], "staff member not synced yet", raw))
                continue
            if booking["service_id"] not in services:
                booking["service_id"] = None  # keep the record; the services list still names it
            person = raw.get("client") if isinstance(raw.get("client"), dict) else None
            if person and person.get("id"):
                try:
                    clients[convert.as_int(person, "id")] = {
                        "company_id": self.company_id,
                        "yclients_id": convert.as_int(person, "id"),
                        "name": convert.text(person, "name"),
                        "phone": phone_or_none(person.get("phone")),
                    }
                    booking["_client"] = convert.as_int(person, "id")
                except convert.RowError:
                    pass  # the booking stands without its client link
            bookings.append(booking)
        local = {}
        if clients:
            saved = save(
                ClientRepository(),
                list(clients.values()),
                RunCounters(),
                conflict=("company_id", "yclients_id"),
                returning=True,
            )
            local = {row["yclients_id"]: row["id"] for row in saved}
        for booking in bookings:
            booking["client_id"] = local.get(booking.pop("_client", None))
        return bookings

    def sync_record(self, record_id: int) -> str:
        """One record, as a webhook names it, read back from the API: saved (or marked deleted) like a page row."""
        raw = self.client.one(f"record/{self.company_id}/{record_id}")
        if raw is None:
            gone = BookingRepository().mark_record_deleted(self.company_id, record_id)
            return "deleted" if gone else "absent"
        counters = RunCounters()
        saved = self._save_records([raw], self.zone(), counters, 0)
        SyncRejectedRowRepository().keep(self.company_id, "records", None, counters.held)
        if saved:
            return "saved"
        return "pending" if counters.pending else "rejected"

    def sync_staff_day(self, staff_id: int, day: date) -> int:
        """One staff member's records of one day, read now: what a refused booking learns before it offers
        other times (the salon's calendar changed under ours). Returns how many were saved."""
        params = {"start_date": day.isoformat(), "end_date": day.isoformat(), "staff_id": staff_id}
        saved = 0
        for page in self.client.record_pages(self.company_id, params, deadline=self.deadline):
            saved += len(self._save_records(page.rows, self.zone(), RunCounters(), 0))
        return saved
