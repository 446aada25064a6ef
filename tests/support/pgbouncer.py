"""Debian's PgBouncer, started by a test in front of the test database: a transaction-mode database for the
fleet's pools and a session-mode one for its session path, on a free port, with its admin console."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.support.redis_server import free_port


@dataclass
class PgBouncer:
    port: int
    directory: Path
    dbname: str
    user: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def transaction_url(self) -> str:
        return self.url(self.dbname)

    @property
    def session_url(self) -> str:
        return self.url(f"{self.dbname}_session")

    def show(self, what: str) -> list[dict[str, Any]]:
        """`SHOW <what>` on the admin console (simple query protocol, as the console requires)."""
        with psycopg.connect(self.url("pgbouncer"), autocommit=True, cursor_factory=psycopg.ClientCursor) as admin:
            cursor = admin.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def pgbouncer_in_front_of(database_url: str, pool_size: int = 4) -> Iterator[PgBouncer]:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise RuntimeError("pgbouncer is not installed (ops/run-tests installs Debian's package as root)")
    target = conninfo_to_dict(database_url)
    directory = Path(tempfile.mkdtemp(prefix="fleet-pgbouncer-"))
    port = free_port()
    user = str(target.get("user") or "postgres")
    dbname = str(target["dbname"])
    server = f"host={target.get('host', '127.0.0.1')} port={target.get('port', 5432)} dbname={dbname}"
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{dbname} = {server} pool_mode=transaction\n"
        f"{dbname}_session = {server} pool_mode=session pool_size=8\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\nadmin_users = {user}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
        f"logfile = {directory / 'pgbouncer.log'}\npidfile = {directory / 'pgbouncer.pid'}\n"
    )
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(directory, user="postgres", group="postgres")
        for path in directory.iterdir():
            shutil.chown(path, user="postgres", group="postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bouncer = PgBouncer(port, directory, dbname, user)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                bouncer.show("VERSION")
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start:\n{bouncer.log()}") from None
                time.sleep(0.1)
        yield bouncer
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
