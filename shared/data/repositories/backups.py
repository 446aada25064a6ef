"""`backups`: one row per backup attempt, from running to verified (or failed), then pruned by retention."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from shared.core.db import run
from shared.data.repository import Repository, Row


class BackupRepository(Repository):
    table = "backups"
    columns = frozenset(
        {
            "id",
            "status",
            "started_at",
            "finished_at",
            "verified_at",
            "path",
            "offsite_path",
            "size_bytes",
            "sha256",
            "pg_dump_version",
            "server_version",
            "table_counts",
            "error",
        }
    )
    json_columns = frozenset({"table_counts"})

    def start(self) -> int:
        """A new attempt, running until it is verified or fails; returns its id."""
        return self.insert({"status": "running"})["id"]

    def mark_failed(self, backup_id: int, error: str, *, finished: bool = True) -> None:
        """A failed attempt, or (`finished` False) a verified backup that no longer verifies: never good again."""
        run(
            "UPDATE backups SET status = 'failed', error = %s,"
            " finished_at = CASE WHEN %s THEN now() ELSE finished_at END WHERE id = %s",
            (error[:2000], finished, backup_id),
            table=self.table,
            operation="update",
        )

    def mark_verified(self, backup_id: int, **facts: Any) -> None:
        """Where the verified archive is and what it holds (path, offsite_path, size_bytes, sha256,
        pg_dump_version, server_version, table_counts)."""
        run(
            "UPDATE backups SET status = 'verified', finished_at = now(), verified_at = now(), path = %(path)s,"
            " offsite_path = %(offsite_path)s, size_bytes = %(size_bytes)s, sha256 = %(sha256)s,"
            " pg_dump_version = %(pg_dump_version)s, server_version = %(server_version)s,"
            " table_counts = %(table_counts)s WHERE id = %(id)s",
            {**facts, "table_counts": Jsonb(facts["table_counts"]), "id": backup_id},
            table=self.table,
            operation="update",
        )

    def mark_pruned(self, backup_id: int) -> None:
        """Retention removed the archive; only a verified backup can be pruned."""
        run(
            "UPDATE backups SET status = 'pruned' WHERE id = %s AND status = 'verified'",
            (backup_id,),
            table=self.table,
            operation="update",
        )

    def by_id(self, backup_id: int) -> Row | None:
        return self.find_one({"id": backup_id})

    def newest_verified(self) -> Row | None:
        """The newest verified backup, with `age` in seconds."""
        rows = run(
            "SELECT *, extract(epoch FROM now() - finished_at) AS age FROM backups WHERE status = 'verified'"
            " ORDER BY finished_at DESC LIMIT 1",
            table=self.table,
            operation="select",
        )
        return rows[0] if rows else None

    def latest_attempt(self) -> Row | None:
        """The newest attempt that ended (verified, failed or since pruned): a failed one keeps /health/backups
        unhealthy until a later one is verified. One still running is not an outcome yet."""
        rows = run(
            "SELECT id, status, error, finished_at FROM backups WHERE status <> 'running' ORDER BY id DESC LIMIT 1",
            table=self.table,
            operation="select",
        )
        return rows[0] if rows else None

    def verified(self) -> list[Row]:
        """Every verified backup: what retention chooses among."""
        return self.find_many({"status": "verified"})

    def failed_within_days(self, days: int) -> int:
        return run(
            "SELECT count(*) AS n FROM backups WHERE status = 'failed'"
            " AND started_at > now() - make_interval(days => %s)",
            (days,),
            table=self.table,
            operation="select",
        )[0]["n"]

    def newest(self, limit: int) -> list[Row]:
        """The latest attempts, newest first (the operators' list)."""
        return self.find_many(order_by=["-id"], limit=limit)
