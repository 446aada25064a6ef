"""Stand-ins for the PostgreSQL client programs: a wrapper script on PATH that runs the real one differently."""

from __future__ import annotations

import stat
from pathlib import Path

from shared.backups.tools import PgTools
from shared.core.settings import BackupSettings


def real_program(program: str) -> str:
    """Where the fleet would find the real `pg_dump`/`pg_restore`/`psql` on this machine."""
    return str(PgTools(BackupSettings(), "").path(program))


def wrapper(directory: Path, program: str, body: str) -> None:
    """An executable `directory/program` running the shell `body` (e.g. the real tool with other options)."""
    directory.mkdir(exist_ok=True)
    script = directory / program
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def pg_dump_as_a_role_that_does_not_exist(directory: Path) -> None:
    """The real pg_dump, connecting as a role the server does not have: it fails as bad credentials do. The
    fleet passes its connection options as `--dbname=<conninfo>`; a keyword appended there wins."""
    real = real_program("pg_dump")
    as_no_such_role = 'case "$arg" in --dbname=*) arg="$arg user=no_such_role";; esac'
    wrapper(
        directory,
        "pg_dump",
        f'[ "$1" = --version ] && exec {real} --version\n'
        f'for arg; do shift; {as_no_such_role}; set -- "$@" "$arg"; done\nexec {real} "$@"',
    )
