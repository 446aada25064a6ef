"""Restore a verified backup into a named database, and the drill that proves backups restorable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from shared.backups import archive, catalog
from shared.backups.engine import verify_archive
from shared.backups.files import archive_in, checked_database_name, scratch_name
from shared.backups.tools import BackupError, PgTools, one_line, reason_of
from shared.core.settings import BackupSettings
from shared.data.repositories.backups import BackupRepository
from shared.data.repositories.health_checks import HealthCheckRepository

log = logging.getLogger(__name__)

# The phases a restore and a drill tell their `on_progress` as each starts.
RESTORE_PHASES = ("verify", "prepare database", "restore")
DRILL_PHASES = (*RESTORE_PHASES, "compare")


def chosen_backup(backup_id: int | None) -> dict[str, Any]:
    if backup_id is None:
        newest = BackupRepository().newest_verified()
        if newest is None:
            raise BackupError("there is no verified backup to restore")
        return newest
    row = BackupRepository().by_id(backup_id)
    if row is None:
        raise BackupError(f"backup {backup_id} does not exist")
    if row["status"] != "verified":
        raise BackupError(f"backup {backup_id} is {row['status']}, not verified: it cannot be restored")
    return row


def restore_backup(
    settings: BackupSettings,
    conninfo: str,
    target: str,
    *,
    backup_id: int | None = None,
    force: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Restore into `target`; a non-empty target is refused unless `force` (then it is dropped first).
    `on_progress` is told each of RESTORE_PHASES as it starts."""
    tell = on_progress or (lambda phase: None)
    checked_database_name(target)
    backup = chosen_backup(backup_id)
    if target == psycopg.conninfo.conninfo_to_dict(conninfo).get("dbname") and not force:
        raise BackupError(f"refusing to restore over the live database {target!r} without --force")
    tools = PgTools(settings, conninfo)
    path = archive_in(backup["path"], settings.directory)
    tell("verify")
    try:
        verify_archive(tools, path, backup["sha256"], list(backup["table_counts"]), settings.min_archive_bytes)
    except BackupError as exc:
        # A backup that no longer verifies never counts as good again (retention keeps an older one).
        BackupRepository().mark_failed(backup["id"], f"re-verification failed: {exc}", finished=False)
        raise
    tell("prepare database")
    state = catalog.has_tables(conninfo, target)
    with catalog.admin_connection(conninfo) as admin:
        if state and not force:
            raise BackupError(f"database {target!r} is not empty; restore into a new name or pass --force")
        if state is not None and (state or force):
            catalog.drop_database(admin, target)
            state = None
        if state is None:
            catalog.create_database(admin, target)
    # The fleet's full connection options with `target` (a checked identifier, quoted) as the database name.
    into = tools.for_database(target)
    tell("restore")
    archive.pg_restore(into, path, "--no-owner", "--exit-on-error", "--single-transaction", into.connection_option())
    log.info("backup %s restored into %s", backup["id"], target)
    return backup


def count_rows(conninfo: str, dbname: str) -> dict[str, int]:
    with psycopg.connect(make_conninfo(conninfo, dbname=dbname)) as conn:
        return catalog.count_rows(conn)


@dataclass
class DrillResult:
    backup_id: int | None
    passed: bool
    differences: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    error: str | None = None

    def render(self) -> str:
        if self.passed:
            return f"restore drill of backup {self.backup_id}: passed (row counts match)"
        return f"restore drill of backup {self.backup_id}: FAILED: {self.reason()}"

    def reason(self) -> str:
        """Why it failed, in one bounded line (the CLI, the journal and /health/backups show it)."""
        counts = ", ".join(f"{t}: recorded {a}, restored {b}" for t, (a, b) in self.differences.items())
        return one_line(self.error or f"row counts differ: {counts}")


def drill(
    settings: BackupSettings,
    conninfo: str,
    backup_id: int | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> DrillResult:
    """Restore the newest verified backup into a scratch database, compare row counts, drop it, record it.
    `on_progress` is told each of DRILL_PHASES as it starts."""
    live = str(psycopg.conninfo.conninfo_to_dict(conninfo).get("dbname"))
    scratch = scratch_name(live)
    if scratch == live:
        raise BackupError("the drill's scratch name equals the live database's: refusing")
    result = DrillResult(backup_id, passed=False)
    try:
        result.backup_id = chosen_backup(backup_id)["id"]  # named in the report even when its restore fails
        backup = restore_backup(
            settings, conninfo, scratch, backup_id=result.backup_id, force=True, on_progress=on_progress
        )
        if on_progress is not None:
            on_progress("compare")
        restored = count_rows(conninfo, scratch)
        recorded = backup["table_counts"]
        for table in sorted(set(recorded) | set(restored)):
            if recorded.get(table) != restored.get(table):
                result.differences[table] = (recorded.get(table), restored.get(table))
        result.passed = not result.differences
    except Exception as exc:  # noqa: BLE001  (any cause, a scratch database not created too, is a failed drill)
        result.error = reason_of(exc, settings.directory)
    finally:
        try:
            with catalog.admin_connection(conninfo) as admin:
                catalog.drop_database(admin, scratch)
        except Exception as exc:  # noqa: BLE001  (recorded as the drill's failure below, not lost)
            result.passed = False
            result.error = result.error or f"the scratch database {scratch} was not dropped: {reason_of(exc)}"
    HealthCheckRepository().record(
        "backup_drill",
        "healthy" if result.passed else "unhealthy",
        {
            "differences": {t: list(v) for t, v in result.differences.items()},
            "error": None if result.passed else result.reason(),
        },
        subject=str(result.backup_id or ""),
    )
    (log.info if result.passed else log.error)("%s", result.render())
    return result
