"""`reminders`: one row per booking and kind ("evening" before, "before" the visit), so each is sent once;
the client's answer to it is kept with it."""

from __future__ import annotations

from datetime import datetime

from shared.core.db import Connection, run
from shared.data.repository import Repository, Row


class ReminderRepository(Repository):
    table = "reminders"
    columns = frozenset({"booking_id", "kind", "outbox_id", "answer", "sent_at"})
    key = ("booking_id", "kind")

    def due(self, evening_at: str, hours_before: float, now: datetime, limit: int = 200) -> list[Row]:
        """Active bookings with a reminder due and not sent: "evening" from `evening_at` (salon time) on the day
        before the visit, "before" from `hours_before` hours before it. A reminder whose time had passed when the
        booking was made is not sent, and once the "before" one is due the evening one is skipped."""
        return run(
            """
            SELECT b.*, k.kind, c.phone AS chat_id
              FROM bookings b
              JOIN companies co ON co.id = b.company_id
              JOIN clients c ON c.id = b.client_id
             CROSS JOIN LATERAL (VALUES
                   ('evening', ((b.starts_at AT TIME ZONE coalesce(co.timezone_name, 'Europe/Moscow'))::date - 1
                                + %(evening)s::time) AT TIME ZONE coalesce(co.timezone_name, 'Europe/Moscow')),
                   ('before', b.starts_at - make_interval(secs => %(before)s))
             ) AS k (kind, due_at)
             WHERE b.status <> 'cancelled' AND b.deleted_at IS NULL AND c.phone IS NOT NULL
               AND b.starts_at > %(now)s AND b.starts_at < %(now)s + interval '2 days'
               AND %(now)s >= k.due_at AND b.created_at < k.due_at
               AND NOT (k.kind = 'evening' AND %(now)s >= b.starts_at - make_interval(secs => %(before)s))
               AND NOT EXISTS (SELECT 1 FROM reminders r WHERE r.booking_id = b.id AND r.kind = k.kind)
             ORDER BY b.starts_at
             LIMIT %(limit)s
            """,
            {"now": now, "evening": evening_at, "before": hours_before * 3600, "limit": limit},
            table=self.table,
            operation="select",
        )

    def claim(self, booking_id: int, kind: str, *, conn: Connection) -> bool:
        """Take the reminder for sending; False when it was sent already (by another run or worker)."""
        rows = run(
            "INSERT INTO reminders (booking_id, kind) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            (booking_id, kind),
            table=self.table,
            operation="insert",
            conn=conn,
        )
        return bool(rows)

    def attach_reply(self, booking_id: int, kind: str, outbox_id: int, *, conn: Connection) -> None:
        """The outbox row that carries the reminder, so the client's answer can be read against it."""
        run(
            "UPDATE reminders SET outbox_id = %s WHERE booking_id = %s AND kind = %s",
            (outbox_id, booking_id, kind),
            table=self.table,
            operation="update",
            conn=conn,
        )

    def answer(self, booking_id: int, value: str, *, conn: Connection | None = None) -> None:
        """The client's answer to the booking's latest reminder."""
        run(
            "UPDATE reminders SET answer = %s WHERE booking_id = %s AND answer IS NULL",
            (value, booking_id),
            table=self.table,
            operation="update",
            conn=conn,
        )
