"""`backups`: one row per backup attempt, from running to verified (or failed), then pruned by retention."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from shared.core.db import run
from shared.data.repository import Row

TABLE = "backups"


def start() -> int:
    return run("INSERT INTO backups (status) VALUES ('running') RETURNING id", table=TABLE, operation="insert")[0]["id"]


def mark_failed(backup_id: int, error: str, *, finished: bool = True) -> None:
    """A failed attempt, or (`finished` False) a verified backup that no longer verifies: never good again."""
    run(
        "UPDATE backups SET status = 'failed', error = %s,"
        " finished_at = CASE WHEN %s THEN now() ELSE finished_at END WHERE id = %s",
        (error[:2000], finished, backup_id),
        table=TABLE,
        operation="update",
    )


def mark_verified(backup_id: int, **facts: Any) -> None:
    """Where the verified archive is and what it holds (path, offsite_path, size_bytes, sha256,
    pg_dump_version, server_version, table_counts)."""
    run(
        "UPDATE backups SET status = 'verified', finished_at = now(), verified_at = now(), path = %(path)s,"
        " offsite_path = %(offsite_path)s, size_bytes = %(size_bytes)s, sha256 = %(sha256)s,"
        " pg_dump_version = %(pg_dump_version)s, server_version = %(server_version)s,"
        " table_counts = %(table_counts)s WHERE id = %(id)s",
        {**facts, "table_counts": Jsonb(facts["table_counts"]), "id": backup_id},
        table=TABLE,
        operation="update",
    )


def mark_pruned(backup_id: int) -> None:
    run(
        "UPDATE backups SET status = 'pruned' WHERE id = %s AND status = 'verified'",
        (backup_id,),
        table=TABLE,
        operation="update",
    )


def by_id(backup_id: int) -> Row | None:
    rows = run("SELECT * FROM backups WHERE id = %s", (backup_id,), table=TABLE, operation="select")
    return rows[0] if rows else None


def newest_verified() -> Row | None:
    """The newest verified backup, with `age` in seconds."""
    rows = run(
        "SELECT *, extract(epoch FROM now() - finished_at) AS age FROM backups WHERE status = 'verified'"
        " ORDER BY finished_at DESC LIMIT 1",
        table=TABLE,
        operation="select",
    )
    return rows[0] if rows else None


def verified() -> list[Row]:
    return run(
        "SELECT id, finished_at, path, offsite_path FROM backups WHERE status = 'verified'",
        table=TABLE,
        operation="select",
    )


def failed_within_days(days: int) -> int:
    return run(
        "SELECT count(*) AS n FROM backups WHERE status = 'failed' AND started_at > now() - make_interval(days => %s)",
        (days,),
        table=TABLE,
        operation="select",
    )[0]["n"]


def newest(limit: int) -> list[Row]:
    return run(
        "SELECT id, status, finished_at, size_bytes, path, error FROM backups ORDER BY id DESC LIMIT %s",
        (limit,),
        table=TABLE,
        operation="select",
    )
