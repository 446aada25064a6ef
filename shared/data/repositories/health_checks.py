"""`health_checks`: heartbeats, the fleet's health report, WhatsApp session health and restore drills all write
here, and the health report reads here."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from shared.core.db import Connection, run
from shared.data.repository import Repository, Row


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


class HealthCheckRepository(Repository):
    table = "health_checks"
    columns = frozenset({"id", "check_name", "subject", "status", "details", "checked_at"})
    json_columns = frozenset({"details"})

    def record(
        self,
        check_name: str,
        status: str,
        details: Any,
        *,
        subject: str | None = None,
        conn: Connection | None = None,
    ) -> datetime:
        """Store one result; returns when it was checked. Details may hold dates and decimals (kept as text)."""
        rows = run(
            "INSERT INTO health_checks (check_name, subject, status, details) VALUES (%s, %s, %s, %s)"
            " RETURNING checked_at",
            (check_name, subject or "", status, Jsonb(details, dumps=_dumps)),  # "" is the column's "no subject"
            table=self.table,
            operation="insert",
            conn=conn,
        )
        return rows[0]["checked_at"]

    def latest(self, check_name: str, *, subject: str | None = None, conn: Connection | None = None) -> Row | None:
        """The newest result of a check (for one subject, when given)."""
        rows = run(
            "SELECT status, checked_at, details FROM health_checks WHERE check_name = %s"
            " AND (%s::text IS NULL OR subject = %s) ORDER BY checked_at DESC, id DESC LIMIT 1",
            (check_name, subject, subject),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return rows[0] if rows else None

    def latest_per_subject(self, check_name: str) -> list[Row]:
        """Each subject's newest result of a check, with the problems it named."""
        return run(
            "SELECT DISTINCT ON (subject) subject, status, checked_at, details->'problems' AS problems"
            " FROM health_checks WHERE check_name = %s ORDER BY subject, checked_at DESC, id DESC",
            (check_name,),
            table=self.table,
            operation="select",
        )

    def seconds_since(self, check_name: str) -> float | None:
        row = run(
            "SELECT extract(epoch FROM now() - max(checked_at)) AS age FROM health_checks WHERE check_name = %s",
            (check_name,),
            table=self.table,
            operation="select",
        )[0]
        return None if row["age"] is None else float(row["age"])

    def prune(self, days: float, *, check_name: str | None = None, conn: Connection | None = None) -> int:
        """Delete results older than `days` (of one check, when given); returns how many went."""
        rows = run(
            "DELETE FROM health_checks WHERE checked_at < now() - make_interval(days => %s)"
            " AND (%s::text IS NULL OR check_name = %s) RETURNING 1",
            (days, check_name, check_name),
            table=self.table,
            operation="delete",
            conn=conn,
        )
        return len(rows)
