"""The PostgreSQL client programs, connecting exactly as the fleet's own connections do, credentials kept out
of the command line.

Every option of the fleet's URL reaches them (TLS modes and files, keepalives, target_session_attrs...): an
option dropped on the way has made pg_dump connect without the certificate checks the fleet itself makes.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.core.failure import FleetError
from shared.core.settings import BackupSettings


class BackupError(FleetError):
    """A backup, verification, restore or drill failed; the message says what and why."""


VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgTools:
    settings: BackupSettings
    conninfo: str

    def path(self, program: str) -> str:
        if self.settings.pg_bin_dir is not None:
            candidate = self.settings.pg_bin_dir / program
            if not candidate.is_file():
                raise BackupError(f"{program} is not in FLEET_BACKUP__PG_BIN_DIR ({self.settings.pg_bin_dir})")
            return str(candidate)
        found = shutil.which(program)
        if found is None:
            raise BackupError(f"{program} is not installed (Debian: postgresql-client); set FLEET_BACKUP__PG_BIN_DIR")
        return found

    def env(self, conninfo: str | None = None) -> dict[str, str]:
        """This process's environment (which the fleet's own connections read too) with every option of the URL
        that libpq takes from a PG* variable set over it; the password reaches the tools only this way, never `ps`."""
        env = dict(os.environ)
        variables = libpq_variables()
        for key, value in conninfo_to_dict(conninfo or self.conninfo).items():
            if key in variables and value is not None:
                env[variables[key]] = str(value)
        return env

    def connection_option(self) -> str:
        """`--dbname=<conninfo>` for a tool that connects: the URL's every option but the password (`env()` has
        it). An option the tool's libpq does not know is refused loudly there, not silently dropped."""
        parts = conninfo_to_dict(self.conninfo)
        hidden = sorted(key for key in parts if key in libpq_secrets() and key not in libpq_variables())
        if hidden:
            raise BackupError(
                f"the database URL's {', '.join(hidden)} could reach pg_dump only on its command line, visible in `ps`:"
                " use a client key without a passphrase, readable by the fleet's user only"
            )
        return "--dbname=" + make_conninfo("", **{key: value for key, value in parts.items() if key != "password"})

    def for_database(self, dbname: str) -> PgTools:
        return PgTools(self.settings, make_conninfo(self.conninfo, dbname=dbname))

    def run(
        self,
        program: str,
        *args: str,
        timeout: float | None = None,
        stdout: int | None = subprocess.PIPE,
        stdin: IO[bytes] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [self.path(program), *args],
            env=self.env(),
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=timeout or self.settings.dump_timeout_seconds,
            check=False,
        )
        if result.returncode != 0:
            raise BackupError(failure_text(program, result.returncode, result.stderr))
        return result

    def version(self, program: str) -> tuple[int, int]:
        text = self.run(program, "--version").stdout.decode()
        match = VERSION.search(text)
        if match is None:
            raise BackupError(f"cannot read the version of {program}: {text.strip()!r}")
        return int(match.group(1)), int(match.group(2) or 0)


@functools.cache
def libpq_variables() -> dict[str, str]:
    """Connection keyword -> the PG* variable libpq reads it from, as libpq itself lists them."""
    return {option.keyword.decode(): option.envvar.decode() for option in pq.Conninfo.get_defaults() if option.envvar}


@functools.cache
def libpq_secrets() -> frozenset[str]:
    """The keywords libpq marks as secret (shown as "*"): password, sslpassword..."""
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults() if option.dispchar == b"*")


# How long a reason may be: it goes into one line of `fleet backup`, the `backups` row, alerts and /health.
MAX_REASON_CHARS = 500
# Causes an operator acts on, as programs word them in their messages (strerror), and as the fleet names them.
CAUSES = {"no space left on device": "no space left on device", "permission denied": "permission denied",
          "read-only file system": "permission denied", "disk quota exceeded": "disk quota exceeded"}  # fmt: skip


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """A reason on one bounded line: it is printed, stored and alerted, never a wall of text."""
    joined = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def exit_text(code: int) -> str:
    """`exit 1`, or the signal that ended the program (a negative return code), by name."""
    if code >= 0:
        return f"exit {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def failure_text(program: str, code: int, stderr: bytes) -> str:
    """A failed program in one line: its error lines (else its last meaningful lines), bounded, after the cause
    an operator acts on when they name one (a full disk, a denied permission)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines[-3:]
    said = one_line("\n".join(errors[:3]))
    text = f"{program} failed ({exit_text(code)})" + (f": {said}" if said else "")
    cause = next((name for words, name in CAUSES.items() if words in said.lower()), None)
    return f"{cause}: {text}" if cause else text


def os_error_text(exc: OSError, directory: Path | str | None = None) -> str:
    """An OSError by its cause and where: "no space left on device (<directory>)", "permission denied (<path>)".
    A write's error carries no file name, so the caller says which directory it wrote into."""
    path = exc.filename if exc.filename is not None else directory
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        where = directory if directory is not None else path
        return f"{cause} ({where})" if where is not None else cause
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({path})" if path is not None else "permission denied"
    if exc.errno == errno.EROFS:
        return (
            f"permission denied ({path}: read-only file system)"
            if path is not None
            else "permission denied (read-only file system)"
        )
    text = exc.strerror or str(exc) or type(exc).__name__
    return one_line(f"{text} ({path})" if path is not None else text)


def reason_of(exc: BaseException, directory: Path | str | None = None) -> str:
    """Why an operation failed, in one line: our own message, an OSError's cause, else the exception's text."""
    if isinstance(exc, BackupError):
        return one_line(str(exc), 2000)  # ours, already worded; as long as a `backups` row keeps
    if isinstance(exc, OSError):
        return os_error_text(exc, directory)
    return one_line(f"{type(exc).__name__}: {exc}")


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
