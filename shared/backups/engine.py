"""Take a backup of the whole database and prove it readable before it counts.

The row counts recorded with a backup are taken in the very snapshot pg_dump dumps (an exported snapshot),
so a restore drill can compare them exactly. The archive is written under a temporary name and renamed
only after pg_dump succeeded; a failure leaves no half file behind. With an off-site directory the backup
counts only once its encrypted copy is there (shared/backups/offsite.py): the plain archive never leaves.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from shared.backups import archive, catalog
from shared.backups.files import companions, make_private, private_directory, private_files
from shared.backups.offsite import copy_offsite, passphrase_ready
from shared.backups.tools import BackupError, PgTools, reason_of, sha256_of
from shared.core.settings import BackupSettings
from shared.data.repositories.backups import BackupRepository

log = logging.getLogger(__name__)

# The phases a backup tells its `on_progress` as each starts (the off-site copy only where one is configured).
BACKUP_PHASES = ("dump", "verify", "off-site copy")


@dataclass
class BackupResult:
    id: int
    path: Path
    size_bytes: int
    sha256: str
    table_counts: dict[str, int]
    offsite_path: Path | None

    def render(self) -> str:
        where = f", encrypted off-site copy {self.offsite_path}" if self.offsite_path else ""
        return (
            f"backup {self.id} verified: {self.path} ({self.size_bytes:,} bytes, sha256 {self.sha256[:12]}…,"
            f" {len(self.table_counts)} tables, {sum(self.table_counts.values()):,} rows){where}"
        )


def require_client_not_older(tools: PgTools, program: str, server: int) -> str:
    """Old pg_dump clients have written near-empty archives that were reported as success: refuse them."""
    major, minor = tools.version(program)
    if major < server:
        raise BackupError(
            f"{program} {major}.{minor} is older than the server ({server}); install the PostgreSQL {server} client"
            " tools (Debian: postgresql-client-{server}) or set FLEET_BACKUP__PG_BIN_DIR"
        )
    return f"{major}.{minor}"


def verify_archive(tools: PgTools, path: Path, sha256: str | None, expected_tables: list[str], min_bytes: int) -> None:
    """Size, checksum (unless it was just taken while writing: `sha256=None`), and the archive's table of
    contents naming every expected table (read from the archive's head, not the whole file)."""
    if not path.exists():
        raise BackupError(f"archive {path} is missing")
    size = path.stat().st_size
    if size < min_bytes:
        raise BackupError(f"archive {path.name} is implausibly small ({size} bytes)")
    if sha256 is not None and sha256_of(path) != sha256:
        raise BackupError(f"archive {path.name} does not match its checksum (corrupted or changed)")
    listing = archive.pg_restore(tools, path, "--list").stdout.decode(errors="replace")
    present = {
        line.split()[-2] for line in listing.splitlines() if " TABLE DATA public " in line and len(line.split()) >= 2
    }
    missing = sorted(set(expected_tables) - present)
    if missing:
        raise BackupError(f"archive {path.name} lacks table data for: {', '.join(missing)}")


def _write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    target = path.with_name(path.name + ".manifest.json")
    temporary = target.with_name(target.name + ".tmp")
    try:
        temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not leave half a manifest behind
        raise
    return target


def _dump_globals(tools: PgTools, path: Path) -> Path | None:
    """Roles and other globals, where this user may read them; their absence is noted, not fatal."""
    target = path.with_name(path.name.removesuffix(archive.SUFFIX) + ".globals.sql")
    try:
        with target.open("wb") as out:
            tools.run(
                "pg_dumpall", tools.connection_option(), "--globals-only", "--no-role-passwords", stdout=out.fileno()
            )
    except BackupError as exc:
        target.unlink(missing_ok=True)
        log.warning("globals not dumped: %s", exc)
        return None
    return target


def take_backup(
    settings: BackupSettings, conninfo: str, on_progress: Callable[[str], None] | None = None
) -> BackupResult:
    """Dump, verify, copy off-site (encrypted), record; raises BackupError (with the row marked failed and its
    files removed, here and off-site) on any failure. `on_progress` is told each of BACKUP_PHASES as it starts."""
    with private_files():
        return _take_backup(settings, conninfo, on_progress or (lambda phase: None))


def _take_backup(settings: BackupSettings, conninfo: str, on_progress: Callable[[str], None]) -> BackupResult:
    tools = PgTools(settings, conninfo)
    directory = settings.directory.resolve()
    backup_id = BackupRepository().start()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = directory / f"fleet-{stamp}-{backup_id}{archive.SUFFIX}"
    temporary = final.with_name(final.name + ".tmp")
    try:
        private_directory(directory)  # an unwritable directory is a failed backup with its cause, like the rest
        passphrase = passphrase_ready(settings) if settings.offsite_directory is not None else None
        on_progress("dump")
        with psycopg.connect(conninfo) as snapshot_conn:
            # One repeatable-read transaction: its exported snapshot is what pg_dump dumps and what we count.
            snapshot_conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snapshot_conn.read_only = True
            server, server_text = catalog.server_major(snapshot_conn)
            client = require_client_not_older(tools, "pg_dump", server)
            require_client_not_older(tools, "pg_restore", server)
            snapshot = catalog.export_snapshot(snapshot_conn)
            dump_args = [f"--snapshot={snapshot}", "--no-sync"]
            with archive.compressed_dump(tools, dump_args, temporary, settings.zstd_level) as dump:
                counts = catalog.count_rows(snapshot_conn)  # while pg_dump reads the same snapshot
                digest = dump.finish(settings.dump_timeout_seconds)
            snapshot_conn.rollback()
        with temporary.open("rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, final)
        size = final.stat().st_size
        on_progress("verify")
        verify_archive(tools, final, None, list(counts), settings.min_archive_bytes)
        manifest = {
            "id": backup_id,
            "file": final.name,
            "size_bytes": size,
            "sha256": digest,
            "created_at": datetime.now(UTC).isoformat(),
            "pg_dump_version": client,
            "server_version": server_text,
            "table_counts": counts,
        }
        manifest_path = _write_manifest(final, manifest)
        globals_path = _dump_globals(tools, final)
        make_private(final, manifest_path, globals_path)
        offsite = None
        if passphrase is not None:
            local = [final, manifest_path, *([globals_path] if globals_path else [])]
            sums = [digest, *(sha256_of(path) for path in local[1:])]
            on_progress("off-site copy")
            offsite = copy_offsite(settings, passphrase, list(zip(local, sums, strict=True)))
    except Exception as exc:
        error = reason_of(exc, directory)  # the cause seen first: a full disk, a denied path, pg_dump's message
        for path in [temporary, *companions(final)]:
            try:
                path.unlink(missing_ok=True)
            except OSError as cleanup:  # a read-only or foreign directory refuses even a missing name's unlink
                if path.exists():
                    log.warning("could not remove %s: %s", path.name, reason_of(cleanup, directory))
        BackupRepository().mark_failed(backup_id, error)
        raise BackupError(f"backup {backup_id} failed: {error}") from exc
    BackupRepository().mark_verified(
        backup_id,
        path=str(final),
        offsite_path=str(offsite) if offsite else None,
        size_bytes=size,
        sha256=digest,
        pg_dump_version=client,
        server_version=server_text,
        table_counts=counts,
    )
    log.info("backup %s verified: %s bytes", backup_id, size)
    return BackupResult(backup_id, final, size, digest, counts, offsite)
