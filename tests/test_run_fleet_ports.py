"""A port the fleet needs, taken by another process: `./ops/run-fleet` names the port, what it is for and the
process holding it, and starts nothing (supervisord used to restart the process that could not bind in a loop,
saying only "exit status 1")."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.ports import holder, is_free, taken, wanted_ports
from shared.core.settings import load_settings
from tests.support.processes import ROOT


@pytest.fixture
def occupied() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A port held by a process of its own (a listener another program left behind, say)."""
    listener = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    assert listener.stdout is not None
    port = int(listener.stdout.readline())
    try:
        yield port, listener
    finally:
        listener.kill()
        listener.wait()


def test_a_taken_port_is_named_with_the_process_holding_it(occupied: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, listener = occupied
    assert not is_free(port, "127.0.0.1")
    assert holder(port).startswith(f"pid {listener.pid}: "), holder(port)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        unused = free.getsockname()[1]
    assert is_free(unused, "127.0.0.1")


def test_the_ports_come_from_the_settings_and_the_procfiles(tmp_path: Path) -> None:
    demo = tmp_path / "Procfile.demo"
    demo.write_text("standin: python -m ops.standins.yclients --port 18081\n# note: --port 1\n")
    settings = load_settings(flower_port=15555, health={"port": 18088, "webhook_port": 18089})
    wanted = {(item.port, item.process.split()[0]) for item in wanted_ports(settings, [ROOT / "Procfile", demo])}
    assert wanted == {(15555, "flower"), (18088, "health"), (18089, "health"), (18081, "standin")}
    assert taken(wanted_ports(settings, [ROOT / "Procfile", demo])) == []


@pytest.mark.slow
def test_run_fleet_refuses_to_start_on_a_taken_port_and_names_it(
    occupied: tuple[int, subprocess.Popen[bytes]], fleet_env: dict[str, str]
) -> None:
    port, listener = occupied
    env = {**fleet_env, "FLEET_FLOWER_PORT": str(port)}
    started = subprocess.run(
        [str(ROOT / "ops" / "run-fleet")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert started.returncode == 1, started.stdout[-2000:] + started.stderr[-2000:]
    assert f"port {port} for flower (FLEET_FLOWER_PORT) is taken by pid {listener.pid}" in started.stderr
    assert "supervisord" not in started.stdout + started.stderr, "something was started"
