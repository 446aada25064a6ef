"""`key_cleanup_runs`: the journal of WhatsApp key cleanups (what each deleted, per type and company)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from shared.core.db import run
from shared.data.repository import Repository


class KeyCleanupRunRepository(Repository):
    table = "key_cleanup_runs"
    columns = frozenset(
        {
            "id",
            "dry_run",
            "status",
            "started_at",
            "finished_at",
            "batches",
            "deleted",
            "by_company",
            "unknown_types",
            "error",
        }
    )
    json_columns = frozenset({"deleted", "by_company", "unknown_types"})

    def start(self, dry_run: bool) -> int:
        """A new cleanup, running until it is saved finished; returns its id."""
        return self.insert({"dry_run": dry_run})["id"]

    def save(
        self,
        run_id: int,
        *,
        status: str,
        batches: int,
        deleted: dict[str, int],
        by_company: dict[str, dict[str, int]],
        unknown_types: dict[str, int],
        error: str | None,
        finished: bool,
    ) -> None:
        """Progress of a running cleanup, or its outcome (`finished` stamps the end)."""
        values: tuple[Any, ...] = (
            status,
            batches,
            Jsonb(deleted),
            Jsonb(by_company),
            Jsonb(unknown_types),
            error,
            finished,
            run_id,
        )
        run(
            "UPDATE key_cleanup_runs SET status = %s, batches = %s, deleted = %s, by_company = %s,"
            " unknown_types = %s, error = %s, finished_at = CASE WHEN %s THEN now() END WHERE id = %s",
            values,
            table=self.table,
            operation="update",
        )
