"""The PostgreSQL client programs, run with the credentials kept out of the command line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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
            return str(self.settings.pg_bin_dir / program)
        found = shutil.which(program)
        if found is None:
            raise BackupError(f"{program} is not installed (Debian: postgresql-client); set FLEET_BACKUP__PG_BIN_DIR")
        return found

    def env(self, conninfo: str | None = None) -> dict[str, str]:
        """Connection settings as PG* variables: the password never appears in `ps`."""
        parts = conninfo_to_dict(conninfo or self.conninfo)
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        mapping = {
            "host": "PGHOST",
            "port": "PGPORT",
            "user": "PGUSER",
            "password": "PGPASSWORD",
            "dbname": "PGDATABASE",
            "sslmode": "PGSSLMODE",
        }
        for key, variable in mapping.items():
            if parts.get(key):
                env[variable] = str(parts[key])
        return env

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


def failure_text(program: str, code: int, stderr: bytes) -> str:
    """A failed program in one line: its exit code and its error lines (else its last lines)."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    errors = [line for line in lines if "error" in line.lower()] or lines[-3:]
    return f"{program} failed (exit {code}): {' | '.join(errors[:3])}"


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
