"""Take a backup of the whole database and prove it readable before it counts.

The row counts recorded with a backup are taken in the very snapshot pg_dump dumps (an exported snapshot),
so a restore drill can compare them exactly. The archive is written under a temporary name and renamed
only after pg_dump succeeded; a failure leaves no half file behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sentry_sdk

from shared.backups import archive, catalog
from shared.backups.files import make_private, private_directory, private_files
from shared.backups.tools import BackupError, PgTools, sha256_of
from shared.core.settings import BackupSettings
from shared.data.repositories.backups import BackupRepository

log = logging.getLogger(__name__)


@dataclass
class BackupResult:
    id: int
    path: Path
    size_bytes: int
    sha256: str
    table_counts: dict[str, int]
    offsite_path: Path | None

    def render(self) -> str:
        where = f", off-site copy {self.offsite_path}" if self.offsite_path else ""
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
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, target)
    return target


def _copy_verified(source: Path, directory: Path, sha256: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / source.name
    temporary = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, temporary)
    if sha256_of(temporary) != sha256:
        temporary.unlink(missing_ok=True)
        raise BackupError(f"off-site copy of {source.name} does not match the checksum")
    os.replace(temporary, target)
    return target


def encrypt_offsite(passphrase: Path, paths: list[Path]) -> list[Path]:
    """Encrypt off-site files with GnuPG (AES-256, passphrase read from a file) and remove the plain copies.

    The manifest stays plain beside them (names, sizes, counts, the plain archive's checksum): decrypt, then
    verify as usual.
    """
    encrypted = []
    for path in paths:
        target = path.with_name(path.name + ".gpg")
        result = subprocess.run(
            ["gpg", "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--symmetric",
             "--cipher-algo", "AES256", "--passphrase-file", str(passphrase), "--output", str(target), "--", str(path)],
            capture_output=True,
            check=False,
            timeout=3600,
        )  # fmt: skip
        if result.returncode != 0:
            target.unlink(missing_ok=True)
            raise BackupError(f"gpg could not encrypt {path.name}: {result.stderr.decode(errors='replace')[-300:]}")
        make_private(target)
        path.unlink()
        encrypted.append(target)
    return encrypted


def _dump_globals(tools: PgTools, path: Path) -> Path | None:
    """Roles and other globals, where this user may read them; their absence is noted, not fatal."""
    target = path.with_name(path.name.removesuffix(archive.SUFFIX) + ".globals.sql")
    try:
        with target.open("wb") as out:
            tools.run("pg_dumpall", "--globals-only", "--no-role-passwords", stdout=out.fileno())
    except BackupError as exc:
        target.unlink(missing_ok=True)
        log.warning("globals not dumped: %s", exc)
        return None
    return target


def take_backup(settings: BackupSettings, conninfo: str) -> BackupResult:
    """Dump, verify, copy off-site, record; raises BackupError (with the row marked failed) on any failure."""
    with private_files():
        return _take_backup(settings, conninfo)


def _take_backup(settings: BackupSettings, conninfo: str) -> BackupResult:
    tools = PgTools(settings, conninfo)
    directory = private_directory(settings.directory.resolve())
    backup_id = BackupRepository().start()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = directory / f"fleet-{stamp}-{backup_id}{archive.SUFFIX}"
    temporary = final.with_name(final.name + ".tmp")
    try:
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
        offsite = _offsite(settings, final, digest, manifest_path, globals_path, backup_id)
    except Exception as exc:
        temporary.unlink(missing_ok=True)
        error = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
        BackupRepository().mark_failed(backup_id, error)
        if final.exists():
            final.unlink()
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


def _offsite(
    settings: BackupSettings, final: Path, digest: str, manifest: Path, globals_path: Path | None, backup_id: int
) -> Path | None:
    """The second copy; a failure here is reported loudly but does not undo the verified local backup."""
    if settings.offsite_directory is None:
        return None
    try:
        directory = private_directory(settings.offsite_directory)
        copy = _copy_verified(final, directory, digest)
        shutil.copyfile(manifest, directory / manifest.name)
        if globals_path is not None:
            shutil.copyfile(globals_path, directory / globals_path.name)
        copied_globals = directory / globals_path.name if globals_path else None
        make_private(copy, directory / manifest.name, copied_globals)
        if settings.offsite_passphrase_file is not None:
            plain = [copy, *([copied_globals] if copied_globals else [])]
            copy = encrypt_offsite(settings.offsite_passphrase_file, plain)[0]
        return copy
    except (OSError, BackupError) as exc:
        log.error("backup %s: off-site copy failed: %s", backup_id, exc)
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("operation", "backup.offsite")
            sentry_sdk.capture_message(
                f"off-site copy of backup {backup_id} failed: {type(exc).__name__}", level="error"
            )
        return None
