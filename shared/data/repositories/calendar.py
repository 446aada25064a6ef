"""Working slots and bookings; the database refuses a second booking over the same staff time."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from shared.core.db import Connection, run, transaction
from shared.data.errors import ConflictError, NotFoundError
from shared.data.models import BookingIn, StaffScheduleIn
from shared.data.repository import Repository, Row

OVERLAP_CONSTRAINT = "bookings_no_double_booking"


class SlotTakenError(ConflictError):
    """The staff member already has a booking over that time."""


class StaffScheduleRepository(Repository):
    table = "staff_schedules"
    columns = frozenset(
        {
            "company_id",
            "staff_id",
            "date",
            "slots",
            "busy_intervals",
            "off_day",
            "synced_at",
            "deleted_at",
            "created_at",
            "updated_at",
        }
    )
    key = ("company_id", "staff_id", "date")
    model = StaffScheduleIn
    json_columns = frozenset({"slots", "busy_intervals"})

    def for_staff(
        self, company_id: int, staff_id: int, first: date, last: date, *, conn: Connection | None = None
    ) -> list[Row]:
        return self.find_many(
            {
                "company_id": company_id,
                "staff_id": staff_id,
                "date__gte": first,
                "date__lte": last,
                "deleted_at__is_null": True,
            },
            order_by=["date"],
            conn=conn,
        )

    def for_day(self, company_id: int, day: date, *, conn: Connection | None = None) -> list[Row]:
        """Every staff member's working slots on one day (the salon's hours that day are their union)."""
        return self.find_many({"company_id": company_id, "date": day, "deleted_at__is_null": True}, conn=conn)


class BookingRepository(Repository):
    table = "bookings"
    columns = frozenset(
        {
            "id",
            "company_id",
            "yclients_id",
            "client_id",
            "staff_id",
            "service_id",
            "services",
            "starts_at",
            "ends_at",
            "status",
            "source",
            "crm_state",
            "comment",
            "changed_at",
            "synced_at",
            "sync_hash",
            "deleted_at",
            "created_at",
            "updated_at",
        }
    )
    model = BookingIn
    json_columns = frozenset({"services"})

    def create(self, values: dict[str, Any], *, conn: Connection | None = None) -> Row:
        """Insert a booking; `SlotTakenError` when the staff member is already booked over that time."""
        try:
            return self.insert(values, conn=conn)
        except ConflictError as exc:
            if exc.constraint == OVERLAP_CONSTRAINT:
                raise SlotTakenError(
                    str(exc), table=self.table, operation="insert", sqlstate=exc.sqlstate, constraint=exc.constraint
                ) from None
            raise

    def reschedule(
        self,
        booking_id: int,
        starts_at: datetime,
        ends_at: datetime,
        *,
        staff_id: int | None = None,
        conn: Connection | None = None,
    ) -> Row:
        """Move the booking (to another staff member too); `SlotTakenError` when the new time is taken."""
        with transaction(conn) as tx:
            current = self.get({"id": booking_id}, conn=tx)
            staff = current["staff_id"] if staff_id is None else staff_id
            self.validate({**_model_fields(current), "starts_at": starts_at, "ends_at": ends_at, "staff_id": staff})
            try:
                rows = run(
                    "UPDATE bookings SET starts_at = %s, ends_at = %s, staff_id = %s WHERE id = %s RETURNING *",
                    (starts_at, ends_at, staff, booking_id),
                    table=self.table,
                    operation="update",
                    conn=tx,
                )
            except ConflictError as exc:
                if exc.constraint == OVERLAP_CONSTRAINT:
                    raise SlotTakenError(str(exc), table=self.table, operation="update") from None
                raise
        return rows[0]

    def link_to_record(
        self, booking_id: int, company_id: int, record_id: int, *, conn: Connection | None = None
    ) -> bool:
        """YClients holds this booking as `record_id`. A row the sync made for the same record before the link
        (its answer raced ours) is the same visit: it goes, and this booking takes the record id. False when
        the booking is not ours to link (gone, another company's, linked to another record, or ended without
        a record: a booking the fleet gave up on, or whose record vanished, stays as the client was told)."""
        params = {"booking": booking_id, "company": company_id, "record": record_id}
        ours = (
            "id = %(booking)s AND company_id = %(company)s AND (yclients_id IS NULL OR yclients_id = %(record)s)"
            " AND crm_state IN ('pending', 'synced')"
        )
        with transaction(conn) as tx:
            run(
                "DELETE FROM bookings WHERE company_id = %(company)s AND yclients_id = %(record)s"
                f" AND id <> %(booking)s AND source = 'yclients' AND EXISTS (SELECT 1 FROM bookings WHERE {ours})",
                params,
                table=self.table,
                operation="delete",
                conn=tx,
            )
            rows = run(
                f"UPDATE bookings SET yclients_id = %(record)s, crm_state = 'synced', synced_at = now() WHERE {ours}"
                " RETURNING 1",
                params,
                table=self.table,
                operation="update",
                conn=tx,
            )
        return bool(rows)

    def release(
        self,
        booking_id: int,
        state: Literal["refused", "failed", "vanished"] = "refused",
        *,
        conn: Connection | None = None,
    ) -> None:
        """The booking ended without a record in YClients (`state` says how: YClients refused it, the fleet gave
        up carrying it there, or the record was deleted there): it no longer holds the time here either."""
        run(
            "UPDATE bookings SET status = 'cancelled', crm_state = %s WHERE id = %s",
            (state, booking_id),
            table=self.table,
            operation="update",
            conn=conn,
        )

    def rehold(self, booking_id: int, *, conn: Connection | None = None) -> None:
        """A booking the fleet gave up carrying to YClients, taken up again by an operator: it holds its time
        again and waits for YClients (`SlotTakenError` when someone has the time now)."""
        try:
            run(
                "UPDATE bookings SET status = 'confirmed', crm_state = 'pending'"
                " WHERE id = %s AND crm_state = 'failed'",
                (booking_id,),
                table=self.table,
                operation="update",
                conn=conn,
            )
        except ConflictError as exc:
            if exc.constraint == OVERLAP_CONSTRAINT:
                raise SlotTakenError(str(exc), table=self.table, operation="update") from None
            raise

    def ours_to_reconcile(self, company_id: int, first: datetime, last: datetime) -> list[Row]:
        """The chat's own bookings in [first, last) that no CRM operation is still carrying: what the
        reconciliation compares with YClients (one in flight is its operation's to settle)."""
        return run(
            "SELECT b.* FROM bookings b WHERE b.company_id = %s AND b.source = 'assistant' AND b.deleted_at IS NULL"
            " AND b.starts_at >= %s AND b.starts_at < %s AND NOT EXISTS (SELECT 1 FROM crm_operations o"
            " WHERE o.booking_id = b.id AND o.status = 'pending') ORDER BY b.id",
            (company_id, first, last),
            table=self.table,
            operation="select",
        )

    def mark_record_deleted(self, company_id: int, record_id: int) -> int:
        """YClients no longer has the record (a webhook said so and the API confirmed): one soft delete."""
        return len(
            run(
                "UPDATE bookings SET deleted_at = now(), status = 'cancelled' WHERE company_id = %s"
                " AND yclients_id = %s AND deleted_at IS NULL RETURNING 1",
                (company_id, record_id),
                table=self.table,
                operation="update",
            )
        )

    def cancel(self, booking_id: int, *, conn: Connection | None = None) -> Row:
        rows = run(
            "UPDATE bookings SET status = 'cancelled' WHERE id = %s RETURNING *",
            (booking_id,),
            table=self.table,
            operation="update",
            conn=conn,
        )
        if not rows:
            raise NotFoundError(f"no booking {booking_id}", table=self.table, operation="update")
        return rows[0]

    def for_client(
        self, client_id: int, *, upcoming_from: datetime | None = None, conn: Connection | None = None
    ) -> list[Row]:
        filters: dict[str, Any] = {"client_id": client_id, "status__neq": "cancelled", "deleted_at__is_null": True}
        if upcoming_from is not None:
            filters["starts_at__gte"] = upcoming_from
        return self.find_many(filters, order_by=["starts_at"], conn=conn)

    def busy(
        self, company_id: int, staff_id: int, first: datetime, last: datetime, *, conn: Connection | None = None
    ) -> list[Row]:
        """Active bookings of one staff member overlapping [first, last)."""
        return run(
            "SELECT * FROM bookings WHERE company_id = %s AND staff_id = %s AND status <> 'cancelled'"
            " AND deleted_at IS NULL AND tstzrange(starts_at, ends_at) && tstzrange(%s, %s) ORDER BY starts_at",
            (company_id, staff_id, first, last),
            table=self.table,
            operation="select",
            conn=conn,
        )


def _model_fields(row: Row) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name in BookingIn.model_fields and value is not None}
