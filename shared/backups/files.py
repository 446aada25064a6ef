"""Where backup files may live and what they may be called: nothing outside it is read, restored or deleted.

Backups hold the WhatsApp credentials and keys (enough to take over a salon's account), so every file is
private (mode 0600 in a 0700 directory, written under umask 077), and a path or database name that did not
come from us is refused before any tool sees it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from shared.backups.tools import BackupError

# .zst: compressed by zstd (older archives were compressed by pg_dump). Local archives are plain; off-site
# there are only encrypted copies (.gpg), and a plain file there (written by an earlier version) is no backup.
ARCHIVE_NAME = re.compile(r"^fleet-\d{8}T\d{6}Z-\d+\.dump(\.zst)?$")
ENCRYPTED_NAME = re.compile(r"^fleet-\d{8}T\d{6}Z-\d+\.dump(\.zst)?\.gpg$")
# What earlier versions could leave off-site in plain text: archives, globals, half-copied ones.
PLAIN_OFFSITE_NAME = re.compile(r"^fleet-\d{8}T\d{6}Z-\d+\.(dump(\.zst)?|globals\.sql)(\.tmp)?$")
# PostgreSQL identifiers: at most 63 bytes (NAMEDATALEN - 1); anything longer is silently truncated by the
# server, which is how a long name's "_drill" scratch database can become the live one.
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files created inside (by us or by pg_dump, which inherits it) are readable by their owner only."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def make_private(*paths: Path | None) -> None:
    for path in paths:
        if path is not None and path.exists():
            path.chmod(0o600)


def private_directory(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise BackupError(f"not a directory ({directory}): a file is where the directory should be")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    return directory


def archive_in(path: str | Path, *directories: Path | None, name: re.Pattern[str] = ARCHIVE_NAME) -> Path:
    """The archive path, if it is one of ours: a backup name, directly inside a configured directory."""
    candidate = Path(path)
    if not name.match(candidate.name):
        wanted = "fleet-<time>-<id>.dump.zst" + (".gpg" if name is ENCRYPTED_NAME else "")
        raise BackupError(f"refusing {candidate.name!r}: not a backup file name ({wanted})")
    resolved = candidate.resolve()
    allowed = [d.resolve() for d in directories if d is not None]
    if resolved.parent not in allowed or resolved.is_symlink() or candidate.is_symlink():
        raise BackupError(f"refusing {candidate.name!r}: not directly inside a configured backup directory")
    return resolved


def offsite_archive_in(path: str | Path, directory: Path | None) -> Path:
    """An encrypted archive the fleet wrote off-site; a plain file there is never taken for a backup."""
    return archive_in(path, directory, name=ENCRYPTED_NAME)


def companions(archive: Path) -> list[Path]:
    """Everything retention may delete for one backup. Locally: the archive, its manifest and globals, and
    encrypted copies left staged by an interrupted off-site copy. Off-site: the encrypted archive, manifest and
    globals, and the plain manifest earlier versions wrote beside them (names and counts, no data)."""
    base = archive.name.removesuffix(".gpg")
    manifest = base + ".manifest.json"
    globals_name = base.removesuffix(".zst").removesuffix(".dump") + ".globals.sql"
    if archive.name.endswith(".gpg"):
        names = [manifest + ".gpg", manifest, globals_name + ".gpg"]
    else:
        names = [manifest, globals_name, base + ".gpg", manifest + ".gpg", globals_name + ".gpg"]
    return [archive, *(archive.with_name(name) for name in names)]


def plain_offsite_files(directory: Path | None) -> list[Path]:
    """Plain backup files in the off-site directory: never counted, restored or deleted by the fleet."""
    if directory is None or not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if PLAIN_OFFSITE_NAME.match(path.name))


def checked_database_name(name: str) -> str:
    """A plain PostgreSQL identifier, so it can be neither truncated nor read as a connection string."""
    if not DATABASE_NAME.match(name):
        raise BackupError(
            f"refusing database name {name[:80]!r}: use letters, digits and underscores, at most 63 bytes,"
            " not starting with a digit"
        )
    return name


def scratch_name(live: str) -> str:
    """The drill's database: a fixed length, never truncated, never the live one."""
    return f"fleet_drill_{hashlib.sha256(live.encode()).hexdigest()[:12]}"
