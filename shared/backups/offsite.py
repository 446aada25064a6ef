"""The off-site copy, only ever encrypted.

The plain archive holds the WhatsApp credentials, so it never leaves the private local directory: each file is
encrypted there (gpg, AES-256, passphrase read from a file), the encrypted file is decrypted again and must give
the very bytes of the plain one, and only then it is copied off-site under a temporary name, checked and
renamed. A failure removes whatever this backup wrote off-site: a file there is a whole, verified, encrypted
copy, or there is none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from shared.backups.files import private_directory
from shared.backups.tools import BackupError, failure_text, reason_of, sha256_of
from shared.core.preflight import offsite_encryption_problems
from shared.core.settings import BackupSettings

log = logging.getLogger(__name__)

BLOCK = 1 << 20
# How a failed copy's reason begins, in the `backups` row too: /health/backups tells it apart (a warning) by it.
COPY_FAILED = "off-site copy not made"
# No tty, no pinentry, and no passphrase cached in gpg-agent: a decrypt-check must read the passphrase file
# again, not pass because the agent remembered it.
GPG_OPTIONS = ("--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback", "--no-symkey-cache")


def gpg_path() -> str:
    found = shutil.which("gpg")
    if found is None:
        raise BackupError("gpg is not installed (Debian: apt install gpg); off-site copies are encrypted with it")
    return found


def passphrase_ready(settings: BackupSettings) -> Path:
    """The passphrase file, once gpg and the file are fit for use (what `fleet check` checks): checked before
    the dump, so a backup that could not go off-site fails in seconds, not after the whole dump."""
    problems = offsite_encryption_problems(settings)
    if problems or settings.offsite_passphrase_file is None:
        raise BackupError("off-site encryption is not ready: " + "; ".join(problems))
    return settings.offsite_passphrase_file


def encrypt(passphrase: Path, source: Path, target: Path, timeout: float) -> None:
    """`source` encrypted into `target` (beside it, in the private directory); no compression: the archive is
    zstd already."""
    cipher = ["--symmetric", "--cipher-algo", "AES256", "--compress-algo", "none"]
    command = [gpg_path(), *GPG_OPTIONS, "--yes", "--passphrase-file", str(passphrase), *cipher,
               "--output", str(target), "--", str(source)]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if result.returncode != 0:
        target.unlink(missing_ok=True)
        raise BackupError(f"encrypting {source.name}: {failure_text('gpg', result.returncode, result.stderr)}")


def decrypted_sha256(passphrase: Path, path: Path, timeout: float) -> str:
    """The SHA-256 of what `path` decrypts to with this passphrase, hashed as gpg streams it (no plain file)."""
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as errors:
        command = [gpg_path(), *GPG_OPTIONS, "--passphrase-file", str(passphrase), "--output", "-", "--decrypt",
                   "--", str(path)]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        try:
            for block in iter(lambda: process.stdout.read(BLOCK), b""):  # type: ignore[union-attr]
                digest.update(block)
            code = process.wait(timeout)
        finally:
            process.stdout.close()
            if process.poll() is None:
                process.kill()
                process.wait()
        errors.seek(0)
        if code != 0:
            raise BackupError(f"decrypt-check of {path.name}: {failure_text('gpg', code, errors.read())}")
    return digest.hexdigest()


def encrypt_verified(passphrase: Path, source: Path, sha256: str, timeout: float) -> Path:
    """`<source>.gpg` beside `source`, proven to decrypt to exactly `source` (checksum `sha256`)."""
    target = source.with_name(source.name + ".gpg")
    encrypt(passphrase, source, target, timeout)
    target.chmod(0o600)
    if decrypted_sha256(passphrase, target, timeout) != sha256:
        target.unlink(missing_ok=True)
        raise BackupError(f"{target.name} does not decrypt to {source.name} (checksums differ)")
    return target


def copy_verified(source: Path, directory: Path) -> Path:
    """`source` into `directory` under a temporary name, flushed, checked against the source, then renamed:
    a half-copied file never carries a backup's name."""
    target = directory / source.name
    temporary = target.with_name(target.name + ".tmp")
    expected = sha256_of(source)
    try:
        with source.open("rb") as reader, temporary.open("wb") as writer:
            shutil.copyfileobj(reader, writer, BLOCK)
            writer.flush()
            os.fsync(writer.fileno())
        temporary.chmod(0o600)
        if sha256_of(temporary) != expected:
            raise BackupError(f"the off-site copy of {source.name} does not match the checksum")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(directory)
    return target


def _sync_directory(directory: Path) -> None:
    """Make the rename durable where the file system allows it (some network mounts refuse a directory fsync)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _remove(paths: list[Path]) -> list[str]:
    """Remove what this backup wrote off-site (final and temporary names); returns what could not be removed."""
    left = []
    for path in paths:
        for candidate in (path, path.with_name(path.name + ".tmp")):
            try:
                candidate.unlink(missing_ok=True)
            except OSError as exc:
                if candidate.exists():  # a read-only disk refuses even the unlink of a name that is not there
                    left.append(f"{candidate} ({exc.strerror})")
    return left


def copy_offsite(settings: BackupSettings, passphrase: Path, files: list[tuple[Path, str]]) -> Path:
    """Encrypt each local (path, sha256), the archive first, verify, copy; returns the off-site archive.

    The archive is copied last, so once it is there its manifest and globals are too. Raises BackupError with
    the reason; nothing of this backup is then left off-site, nor any encrypted file staged locally.
    """
    assert settings.offsite_directory is not None
    timeout = settings.dump_timeout_seconds
    staged: list[Path] = []
    written: list[Path] = []
    where = files[0][0].parent  # what a full disk or a denied path concerns: the local staging, then off-site
    try:
        for path, sha256 in files:
            staged.append(path.with_name(path.name + ".gpg"))
            encrypt_verified(passphrase, path, sha256, timeout)
        where = settings.offsite_directory
        directory = private_directory(settings.offsite_directory)
        for encrypted in [*staged[1:], staged[0]]:
            written.append(directory / encrypted.name)
            copy_verified(encrypted, directory)
    except BaseException as exc:
        left = _remove(written)
        if left:
            log.error("could not remove partial off-site files: %s", ", ".join(left))
        if isinstance(exc, (BackupError, OSError, subprocess.SubprocessError)):
            detail = reason_of(exc, where)  # "no space left on device (<dir>)", "permission denied (<path>)", gpg's
            after = f"; NOT removed off-site: {', '.join(left)}" if left else "; nothing of it is left off-site"
            raise BackupError(f"{COPY_FAILED}: {detail}{after}") from exc
        raise
    finally:
        for path in staged:
            path.unlink(missing_ok=True)
    return written[-1]
