"""`sync_runs`: the journal of YClients sync runs (what each did, where a failed one stopped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from shared.core.db import run
from shared.data.repository import Repository

RESUME_WITHIN = timedelta(hours=24)


class Counters(Protocol):
    pages: int
    fetched: int
    upserted: int
    unchanged: int
    marked_deleted: int
    rejected: int
    pending: int
    rejections: list[dict[str, Any]]
    deletion: str | None


class SyncRunRepository(Repository):
    table = "sync_runs"
    columns = frozenset(
        {
            "id",
            "company_id",
            "entity",
            "mode",
            "status",
            "started_at",
            "finished_at",
            "pages",
            "rows_fetched",
            "rows_upserted",
            "rows_unchanged",
            "rows_marked_deleted",
            "rows_rejected",
            "rows_pending",
            "rejections",
            "deletion",
            "cursor",
            "error",
        }
    )
    json_columns = frozenset({"rejections", "cursor"})

    def start(self, company_id: int, entity: str, mode: str) -> int:
        """A new run, running until it is finished; returns its id."""
        return self.insert({"company_id": company_id, "entity": entity, "mode": mode})["id"]

    def save_progress(self, run_id: int, c: Counters, cursor: dict[str, Any] | None) -> None:
        """The run's figures so far and where it is (`cursor`, None once there is nothing to resume)."""
        run(
            "UPDATE sync_runs SET pages = %s, rows_fetched = %s, rows_upserted = %s, rows_unchanged = %s,"
            " rows_marked_deleted = %s, rows_rejected = %s, rows_pending = %s, rejections = %s, deletion = %s,"
            " cursor = %s WHERE id = %s",
            (
                c.pages,
                c.fetched,
                c.upserted,
                c.unchanged,
                c.marked_deleted,
                c.rejected,
                c.pending,
                Jsonb(c.rejections),
                c.deletion,
                Jsonb(cursor) if cursor is not None else None,
                run_id,
            ),
            table=self.table,
            operation="update",
        )

    def finish(self, run_id: int, status: str, error: str | None) -> None:
        run(
            "UPDATE sync_runs SET status = %s, error = %s, finished_at = now() WHERE id = %s",
            (status, error, run_id),
            table=self.table,
            operation="update",
        )

    def resume_page(self, company_id: int, entity: str, current_run: int) -> int:
        """The page after the last one the previous run saved, when that run failed recently; else 1."""
        rows = run(
            "SELECT status, cursor, started_at FROM sync_runs WHERE company_id = %s AND entity = %s AND id <> %s"
            " ORDER BY started_at DESC, id DESC LIMIT 1",
            (company_id, entity, current_run),
            table=self.table,
            operation="select",
        )
        if not rows or rows[0]["status"] != "failed" or not rows[0]["cursor"]:
            return 1
        if datetime.now(UTC) - rows[0]["started_at"] > RESUME_WITHIN:
            return 1
        return int(rows[0]["cursor"].get("page", 0)) + 1

    def last_success(self, company_id: int, entity: str) -> datetime | None:
        """When the entity's newest successful run started (an incremental run reads changes since then). A
        `partial` run is no success: it read less than YClients claimed, so changes it missed stay due."""
        rows = run(
            "SELECT max(started_at) AS at FROM sync_runs WHERE company_id = %s AND entity = %s"
            " AND status = 'succeeded'",
            (company_id, entity),
            table=self.table,
            operation="select",
        )
        return rows[0]["at"] if rows else None

    def seconds_since_success(self) -> dict[tuple[int, str], float]:
        """Per (company, entity), seconds since its last successful run."""
        rows = run(
            "SELECT company_id, entity, extract(epoch FROM now() - max(finished_at)) AS age FROM sync_runs"
            " WHERE status = 'succeeded' GROUP BY company_id, entity",
            table=self.table,
            operation="select",
        )
        return {(row["company_id"], row["entity"]): float(row["age"]) for row in rows}

    def failed_within_hours(self, hours: int) -> int:
        return self._count_within_hours("failed", hours)

    def partial_within_hours(self, hours: int) -> int:
        """Runs that read less than YClients claimed (a repeated page, the page cap, fewer rows than total_count)."""
        return self._count_within_hours("partial", hours)

    def _count_within_hours(self, status: str, hours: int) -> int:
        return run(
            "SELECT count(*) AS n FROM sync_runs WHERE status = %s AND started_at > now() - make_interval(hours => %s)",
            (status, hours),
            table=self.table,
            operation="select",
        )[0]["n"]

    def still_partial(self, hours: int) -> list[dict[str, Any]]:
        """Per company and entity, the newest run of the last `hours` that ended partial, unless a later run
        succeeded: what still needs an operator's eye (its `error` holds the figures). A later failed run does not
        hide it: the partial one is still the newest that read anything to the end."""
        return run(
            "SELECT company_id, entity, error, started_at FROM ("
            " SELECT DISTINCT ON (company_id, entity) company_id, entity, status, error, started_at FROM sync_runs"
            " WHERE status IN ('succeeded', 'partial') AND started_at > now() - make_interval(hours => %s)"
            " ORDER BY company_id, entity, started_at DESC, id DESC"
            ") newest WHERE status = 'partial' ORDER BY company_id, entity",
            (hours,),
            table=self.table,
            operation="select",
        )
