"""The archive on disk: a `pg_dump -Fc` stream compressed by zstd on the way out, its checksum taken as written.

Why zstd outside pg_dump: on the PostgreSQL 15 client pg_dump compresses only with gzip, in its own process;
level 1 gzip costs twice the dump itself and still writes a tenth more than zstd -1. An uncompressed custom
archive piped through `zstd` puts the compression on a second core, is about as small as `pg_dump -Fp | zstd`,
and stays a custom archive: `zstd -dc FILE | pg_restore ...` restores it, `pg_restore --list` reads its table of
contents from the first kilobytes. Archives of older versions (`.dump`, compressed by pg_dump) still restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from shared.backups.tools import BackupError, PgTools, failure_text, reason_of

SUFFIX = ".dump.zst"
BLOCK = 1 << 20


def zstd_path() -> str:
    found = shutil.which("zstd")
    if found is None:
        raise BackupError("zstd is not installed (Debian: apt install zstd); backups are compressed with it")
    return found


def is_compressed(path: Path) -> bool:
    return path.name.removesuffix(".gpg").endswith(SUFFIX)


class Dump:
    """`pg_dump | zstd` running, a thread writing zstd's output to the file and hashing it; `finish()` waits
    for it and returns the archive's SHA-256."""

    def __init__(
        self, dump: subprocess.Popen[bytes], pack: subprocess.Popen[bytes], target: Path, errors: tuple[IO[bytes], ...]
    ) -> None:
        self._dump, self._pack, self._errors, self._target = dump, pack, errors, target
        self._digest = hashlib.sha256()
        self._failure: BaseException | None = None
        self._writer = threading.Thread(target=self._write, args=(target,), name="backup-writer", daemon=True)
        self._writer.start()

    def _write(self, target: Path) -> None:
        assert self._pack.stdout is not None
        try:
            with target.open("wb") as out:
                for block in iter(lambda: self._pack.stdout.read(BLOCK), b""):  # type: ignore[union-attr]
                    self._digest.update(block)
                    out.write(block)
        except BaseException as exc:  # noqa: BLE001  (raised by finish(), in the caller's thread)
            self._failure = exc
            self.stop()

    def stop(self) -> None:
        """Kill whatever still runs, and wait for the writer (it ends when zstd's output does)."""
        for process in (self._dump, self._pack):
            if process.poll() is None:
                process.kill()
            process.wait()
        if threading.current_thread() is not self._writer:
            self._writer.join()

    def finish(self, timeout: float) -> str:
        """The checksum once pg_dump, zstd and the writer all succeeded; else BackupError naming what failed
        first. A failed write stops pg_dump and zstd (SIGKILL): their exit is then our doing, not the cause."""
        self._writer.join(timeout)
        if self._writer.is_alive():
            raise BackupError(f"pg_dump did not finish within {timeout:.0f} s (FLEET_BACKUP__DUMP_TIMEOUT_SECONDS)")
        dumped, packed = self._dump.wait(), self._pack.wait()
        if self._failure is not None:
            stopped = "; pg_dump stopped" if dumped != 0 else ""
            cause = reason_of(self._failure, self._target.parent)
            raise BackupError(f"{cause}: could not write the archive{stopped}") from self._failure
        dump_errors = _read(self._errors[0])
        # zstd dying first leaves pg_dump writing into a closed pipe: zstd's own message is the cause then.
        broken_pipe = dumped == -signal.SIGPIPE or b"Broken pipe" in dump_errors
        if packed != 0 and (dumped == 0 or broken_pipe):
            raise BackupError(failure_text("zstd", packed, _read(self._errors[1])))
        if dumped != 0:
            raise BackupError(failure_text("pg_dump", dumped, dump_errors))
        if packed != 0:
            raise BackupError(failure_text("zstd", packed, _read(self._errors[1])))
        return self._digest.hexdigest()


@contextlib.contextmanager
def compressed_dump(tools: PgTools, dump_args: list[str], target: Path, level: int) -> Iterator[Dump]:
    """`pg_dump -Fc -Z0 ARGS | zstd -LEVEL > target`, started on entry; whatever still runs on exit is killed."""
    with tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as pack_errors:
        dump = subprocess.Popen(
            [tools.path("pg_dump"), tools.connection_option(), "--format=custom", "--compress=0", *dump_args],
            env=tools.env(),
            stdout=subprocess.PIPE,
            stderr=dump_errors,
        )
        assert dump.stdout is not None
        try:
            pack = subprocess.Popen(
                [zstd_path(), f"-{level}", "--quiet", "--stdout"],
                stdin=dump.stdout,
                stdout=subprocess.PIPE,
                stderr=pack_errors,
            )
        except BaseException:
            dump.kill()
            dump.wait()
            raise
        finally:
            dump.stdout.close()  # zstd holds the only reading end: pg_dump sees a broken pipe if zstd dies
        running = Dump(dump, pack, target, (dump_errors, pack_errors))
        try:
            yield running
        finally:
            running.stop()
            assert pack.stdout is not None
            pack.stdout.close()


def _read(stream: IO[bytes]) -> bytes:
    stream.seek(0)
    return stream.read()


@contextlib.contextmanager
def archive_stream(path: Path) -> Iterator[IO[bytes] | None]:
    """What pg_restore reads: the decompressed stream of a zstd archive, or None for a plain `.dump` path.

    A reader that stops early (`pg_restore --list` after the table of contents) ends zstd with a broken pipe,
    which is not a failure; a zstd that fails on its own (a damaged frame) is.
    """
    if not is_compressed(path):
        yield None
        return
    with tempfile.TemporaryFile() as errors:
        unpack = subprocess.Popen(
            [zstd_path(), "-dc", "--quiet", "--", str(path)], stdout=subprocess.PIPE, stderr=errors
        )
        assert unpack.stdout is not None
        try:
            yield unpack.stdout
        finally:
            unpack.stdout.close()
            code = unpack.wait()
        message = _read(errors)
    if code not in (0, -13) and b"Broken pipe" not in message:  # -13: SIGPIPE
        raise BackupError(failure_text("zstd", code, message))


def pg_restore(tools: PgTools, path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run pg_restore on an archive of either kind: fed by zstd, or given the plain file."""
    with archive_stream(path) as stream:
        if stream is None:
            return tools.run("pg_restore", *args, "--", str(path))
        return tools.run("pg_restore", *args, stdin=stream)
