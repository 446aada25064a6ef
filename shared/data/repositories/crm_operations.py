"""`crm_operations`: the CRM outbox. A booking, move or cancellation made in a chat is committed together with
one row here, and the YClients worker carries each row out, in order per booking, until it is done (YClients
holds the change, or answered that it refuses it) or given up (shared/data/work_rows.py)."""

from __future__ import annotations

from typing import Any

from shared.core.db import Connection
from shared.data.models import CrmOperationIn
from shared.data.repository import Row
from shared.data.work_rows import WORK_COLUMNS, WorkRows

REFUSED = "refused: "  # how a done operation's outcome starts when YClients said no (the slot was taken, say)


def api_id(booking_id: int) -> str:
    """Our id for the booking's record in YClients (`api_id`): how a create whose answer was lost is found."""
    return f"fleet-booking-{booking_id}"


def booking_of(record_api_id: object) -> int | None:
    """The booking a YClients record's `api_id` says we created, or None for anyone else's record."""
    prefix = "fleet-booking-"
    if isinstance(record_api_id, str) and record_api_id.startswith(prefix) and record_api_id[len(prefix) :].isdigit():
        return int(record_api_id[len(prefix) :])
    return None


def refusal(reason: str) -> str:
    """The outcome of an operation YClients refused: finished (done), and the refusal readable at its head."""
    return f"{REFUSED}{reason}"


class CrmOperationRepository(WorkRows):
    """A booking's operations reach YClients one at a time, oldest first (the order key)."""

    table = "crm_operations"
    columns = WORK_COLUMNS | frozenset(
        {"company_id", "booking_id", "kind", "chat_id", "details", "outcome", "created_at"}
    )
    model = CrmOperationIn
    json_columns = frozenset({"details"})
    order_key = ("booking_id",)

    def add(
        self,
        company_id: int,
        booking_id: int,
        kind: str,
        *,
        chat_id: str | None,
        details: dict[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> int:
        """A new operation, pending from now; returns its id."""
        values = {
            "company_id": company_id,
            "booking_id": booking_id,
            "kind": kind,
            "chat_id": chat_id,
            "details": details or {},
        }
        return self.insert(values, conn=conn)["id"]

    def recent(self, status: str | None, limit: int) -> list[Row]:
        """The newest operations (of one status, if given), for operators; `note` is the outcome, or the
        last error when there is none."""
        rows = self.find_many({"status": status} if status else None, order_by=["-id"], limit=limit)
        return [{**row, "note": row["outcome"] or row["last_error"]} for row in rows]
