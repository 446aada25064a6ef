"""The long `fleet` commands draw progress on a terminal, and only there: the same command with stderr piped (a
log, cron) prints its summary and no bar."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import psycopg
import pytest

from ops.standins.yclients import Salon, YClientsStandIn, generate_salon
from tests.support.processes import ROOT
from tests.support.seed import COMPANY

FLEET = [sys.executable, "-m", "workers.cli"]
CLIENTS = 1000  # five pages of 200
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ")  # the CLI's log format
RATE = re.compile(r"\d(?:page|phase)/s|s/(?:page|phase)")  # tqdm's rate, however fast


@pytest.fixture(scope="module")
def generated_salon() -> Salon:
    return generate_salon(COMPANY, clients=CLIENTS, records=0)


def sync_env(fleet_env: dict[str, str], stand_in: YClientsStandIn) -> dict[str, str]:
    return {
        **fleet_env,
        "FLEET_YCLIENTS__BASE_URL": stand_in.url,
        "FLEET_YCLIENTS__PARTNER_TOKEN": "partner-token",
        "FLEET_YCLIENTS__USER_TOKEN": "user-token",
        "FLEET_YCLIENTS__REQUESTS_PER_SECOND": "1000",
        "FLEET_YCLIENTS__REQUESTS_PER_MINUTE": "100000",
    }


def on_terminal(args: list[str], env: dict[str, str], tmp_path: Path, timeout: float = 120) -> tuple[int, str, str]:
    """`fleet ARGS` with stderr on a pseudo-terminal (120 columns) and stdout in a file: (exit code, stdout,
    everything the terminal received)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    stdout_path = tmp_path / f"stdout-{time.monotonic_ns()}"
    with stdout_path.open("wb") as stdout:
        proc = subprocess.Popen(
            [*FLEET, *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=slave
        )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not chunk:
                break
            received += chunk
        code = proc.wait(max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, stdout_path.read_text(), received.decode(errors="replace")


def piped(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEET, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def assert_log_lines_above_the_bar(terminal: str) -> None:
    """A log line written while a bar is drawn starts a line of its own, never glued to the bar's end."""
    starts = [match.start() for match in LOG_LINE.finditer(terminal)]
    assert starts, terminal
    assert all(start == 0 or terminal[start - 1] in "\r\n" for start in starts), terminal


def assert_no_progress(stderr: str) -> None:
    assert "\r" not in stderr, repr(stderr)
    assert not RATE.search(stderr), stderr
    assert "%|" not in stderr, stderr


def test_fleet_sync_draws_pages_and_rows_on_a_terminal(
    stand_in: YClientsStandIn, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    code, stdout, terminal = on_terminal(
        ["sync", "clients", "--company", str(COMPANY)], sync_env(fleet_env, stand_in), tmp_path
    )
    assert code == 0, terminal
    assert f"clients for company {COMPANY} (full) succeeded: pages 5, fetched {CLIENTS}" in stdout
    assert "clients pages" in terminal, terminal
    assert "100%" in terminal, terminal
    assert "5/5" in terminal, terminal  # pages, of the five total_count implies
    assert RATE.search(terminal), terminal
    assert f"rows {CLIENTS:,}/{CLIENTS:,}" in terminal, terminal
    assert_log_lines_above_the_bar(terminal)


def test_fleet_sync_piped_prints_its_summary_and_no_bar(stand_in: YClientsStandIn, fleet_env: dict[str, str]) -> None:
    result = piped(["sync", "clients", "--company", str(COMPANY)], sync_env(fleet_env, stand_in))
    assert result.returncode == 0, result.stderr
    assert f"clients for company {COMPANY} (full) succeeded: pages 5, fetched {CLIENTS}" in result.stdout
    assert_no_progress(result.stderr)
    assert "pages" not in result.stderr, result.stderr


def test_fleet_backup_and_drill_draw_their_phases_on_a_terminal_only(
    salon: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fleet_env, "FLEET_BACKUP__DIRECTORY": str(tmp_path / "backups")}
    code, stdout, terminal = on_terminal(["backup"], env, tmp_path)
    assert code == 0, terminal
    assert re.search(r"backup \d+ verified", stdout), stdout
    assert "backup: dump" in terminal, terminal
    assert "backup: done: 100%" in terminal, terminal
    assert "3/3 phases" in terminal, terminal
    assert_log_lines_above_the_bar(terminal)

    code, stdout, terminal = on_terminal(["drill"], env, tmp_path)
    assert code == 0, terminal
    assert "passed (row counts match)" in stdout
    assert "drill: compare" in terminal, terminal
    assert "drill: done" in terminal, terminal
    assert "4/4 phases" in terminal, terminal

    result = piped(["drill"], env)
    assert result.returncode == 0, result.stderr
    assert "passed (row counts match)" in result.stdout
    assert_no_progress(result.stderr)
    assert "phases" not in result.stderr, result.stderr
