"""A PostgreSQL server of the test's own (the machine's binaries, a scratch data directory, a free port), so a
test can stop and start it under a running fleet without touching the machine's cluster."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support.redis_server import free_port


def _bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError("no pg_ctl on this machine")
    return candidates[-1].parent


class OwnPostgres:
    """PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="fleet-own-pg-"))
        self.port = free_port()
        self.bin = _bin_dir()
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else getpass.getuser()
        if self.as_root:
            shutil.chown(self.directory, user="postgres", group="postgres")

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.directory / "data"), "-A", "trust", "-U", self.user, "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run(
            "pg_ctl",
            "-D",
            str(self.directory / "data"),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.conninfo(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("own PostgreSQL did not start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")

    def restart(self, down_seconds: float = 2.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def clone_as_standby_of(self, primary: OwnPostgres) -> None:
        """A streaming replica of `primary`: pg_basebackup with -R writes standby.signal and primary_conninfo."""
        self._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            primary.user,
            "-D",
            str(self.directory / "data"),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.conninfo(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
