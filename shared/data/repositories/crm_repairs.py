"""`crm_repairs`: what the reconciliation found between a chat booking and its YClients record, and what it did."""

from __future__ import annotations

from shared.core.db import run
from shared.data.repository import Repository, Row


class CrmRepairRepository(Repository):
    table = "crm_repairs"
    columns = frozenset({"id", "company_id", "booking_id", "record_id", "found", "repair", "created_at"})

    def record(self, company_id: int, booking_id: int | None, record_id: int | None, found: str, repair: str) -> None:
        self.insert(
            {
                "company_id": company_id,
                "booking_id": booking_id,
                "record_id": record_id,
                "found": found[:200],
                "repair": repair[:500],
            }
        )

    def noted(self, booking_id: int, found: str) -> bool:
        """Whether this disagreement of this booking is on record already."""
        return self.find_one({"booking_id": booking_id, "found": found[:200]}) is not None

    def last_day(self) -> Row:
        """`repaired` (every repair of the last day) and `unrepaired` (disagreements found but left to an
        operator), for the health report."""
        return run(
            "SELECT count(*) FILTER (WHERE repair NOT LIKE 'left:%%') AS repaired,"
            " count(*) FILTER (WHERE repair LIKE 'left:%%') AS unrepaired"
            " FROM crm_repairs WHERE created_at > now() - interval '1 day'",
            table=self.table,
            operation="select",
        )[0]
