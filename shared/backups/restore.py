"""Restore a verified backup into a named database, and the drill that proves backups restorable."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from shared.backups.engine import verify_archive
from shared.backups.files import archive_in, checked_database_name, scratch_name
from shared.backups.tools import BackupError, PgTools
from shared.core.db import run
from shared.core.settings import BackupSettings
from shared.data.repositories import health_checks

log = logging.getLogger(__name__)


def chosen_backup(backup_id: int | None) -> dict[str, Any]:
    if backup_id is None:
        rows = run(
            "SELECT * FROM backups WHERE status = 'verified' ORDER BY finished_at DESC LIMIT 1",
            table="backups",
            operation="select",
        )
        if not rows:
            raise BackupError("there is no verified backup to restore")
        return rows[0]
    rows = run("SELECT * FROM backups WHERE id = %s", (backup_id,), table="backups", operation="select")
    if not rows:
        raise BackupError(f"backup {backup_id} does not exist")
    if rows[0]["status"] != "verified":
        raise BackupError(f"backup {backup_id} is {rows[0]['status']}, not verified: it cannot be restored")
    return rows[0]


def _admin(conninfo: str) -> psycopg.Connection:
    return psycopg.connect(make_conninfo(conninfo, dbname="postgres"), autocommit=True)


def _has_tables(conninfo: str, dbname: str) -> bool | None:
    """None when the database does not exist."""
    with _admin(conninfo) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            return None
    with psycopg.connect(make_conninfo(conninfo, dbname=dbname)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    return bool(row and row[0])


def restore_backup(
    settings: BackupSettings, conninfo: str, target: str, *, backup_id: int | None = None, force: bool = False
) -> dict[str, Any]:
    """Restore into `target`; a non-empty target is refused unless `force` (then it is dropped first)."""
    checked_database_name(target)
    backup = chosen_backup(backup_id)
    if target == psycopg.conninfo.conninfo_to_dict(conninfo).get("dbname") and not force:
        raise BackupError(f"refusing to restore over the live database {target!r} without --force")
    tools = PgTools(settings, conninfo)
    archive = archive_in(backup["path"], settings.directory)
    try:
        verify_archive(tools, archive, backup["sha256"], list(backup["table_counts"]), settings.min_archive_bytes)
    except BackupError as exc:
        # A backup that no longer verifies never counts as good again (retention keeps an older one).
        run(
            "UPDATE backups SET status = 'failed', error = %s WHERE id = %s",
            (f"re-verification failed: {exc}"[:2000], backup["id"]),
            table="backups",
            operation="update",
        )
        raise
    state = _has_tables(conninfo, target)
    with _admin(conninfo) as admin:
        if state and not force:
            raise BackupError(f"database {target!r} is not empty; restore into a new name or pass --force")
        if state is not None and (state or force):
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target)))
            state = None
        if state is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    # `target` is a checked identifier (no "=" or spaces), so pg_restore cannot read it as a connection string.
    tools.for_database(target).run(
        "pg_restore", "--no-owner", "--exit-on-error", "--single-transaction", f"--dbname={target}", "--", str(archive)
    )
    log.info("backup %s restored into %s", backup["id"], target)
    return backup


def count_rows(conninfo: str, dbname: str) -> dict[str, int]:
    with psycopg.connect(make_conninfo(conninfo, dbname=dbname)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            ).fetchall()
        ]
        return {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0] for t in tables
        }


@dataclass
class DrillResult:
    backup_id: int | None
    passed: bool
    differences: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    error: str | None = None

    def render(self) -> str:
        if self.passed:
            return f"restore drill of backup {self.backup_id}: passed (row counts match)"
        detail = self.error or ", ".join(f"{t}: recorded {a}, restored {b}" for t, (a, b) in self.differences.items())
        return f"restore drill of backup {self.backup_id}: FAILED: {detail}"


def drill(settings: BackupSettings, conninfo: str, backup_id: int | None = None) -> DrillResult:
    """Restore the newest verified backup into a scratch database, compare row counts, drop it, record it."""
    live = str(psycopg.conninfo.conninfo_to_dict(conninfo).get("dbname"))
    scratch = scratch_name(live)
    if scratch == live:
        raise BackupError("the drill's scratch name equals the live database's: refusing")
    result = DrillResult(backup_id, passed=False)
    try:
        backup = restore_backup(settings, conninfo, scratch, backup_id=backup_id, force=True)
        result.backup_id = backup["id"]
        restored = count_rows(conninfo, scratch)
        recorded = backup["table_counts"]
        for table in sorted(set(recorded) | set(restored)):
            if recorded.get(table) != restored.get(table):
                result.differences[table] = (recorded.get(table), restored.get(table))
        result.passed = not result.differences
    except BackupError as exc:
        result.error = str(exc)
    finally:
        with _admin(conninfo) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    health_checks.record(
        "backup_drill",
        "healthy" if result.passed else "unhealthy",
        {"differences": {t: list(v) for t, v in result.differences.items()}, "error": result.error},
        subject=str(result.backup_id or ""),
    )
    (log.info if result.passed else log.error)("%s", result.render())
    return result
