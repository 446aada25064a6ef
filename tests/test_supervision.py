"""Processes come back and stop warmly: supervisord for ./ops/run-fleet, systemd units for servers."""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ops.supervise import read_procfiles, render
from shared.core.settings import WorkerType, load_settings
from tests.support.processes import ROOT, wait_until, worker_is_ready
from workers.app import app


def test_systemd_waits_longer_than_each_worker_types_hard_limit() -> None:
    settings = load_settings()
    template = configparser.ConfigParser(strict=False, interpolation=None)
    template.read(ROOT / "ops/systemd/fleet-worker@.service")
    default = int(template["Service"]["TimeoutStopSec"])
    for worker_type in WorkerType:
        drop_in = ROOT / f"ops/systemd/fleet-worker@{worker_type.value}.service.d/stop-timeout.conf"
        timeout = default
        if drop_in.exists():
            parsed = configparser.ConfigParser(strict=False, interpolation=None)
            parsed.read(drop_in)
            timeout = int(parsed["Service"]["TimeoutStopSec"])
        assert timeout > settings.workers.of(worker_type).time_limit, worker_type


def test_supervisord_stops_workers_warmly_after_their_hard_limit(tmp_path: Path) -> None:
    settings = load_settings()
    config = configparser.ConfigParser(strict=False, interpolation=None)
    config.read_string(render(read_procfiles([ROOT / "Procfile"]), settings, tmp_path))
    for worker_type in WorkerType:
        program = config[f"program:{worker_type.value}"]
        assert int(program["stopwaitsecs"]) > settings.workers.of(worker_type).time_limit
        assert program["stopasgroup"] == "false", "SIGTERM to the main process only: Celery stops its children"
        assert program["autorestart"] == "true"
    assert config["program:beat"]["stopasgroup"] == "true"


@pytest.mark.slow
def test_a_crashed_worker_comes_back_and_ctrl_c_stops_it_warmly(fleet_env: dict[str, str], tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    node = "inbound-supervised@test"
    procfile.write_text(f"inbound: fleet worker inbound --concurrency 2 --name {node}\n")
    env = {**fleet_env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = (tmp_path / "supervisor.log").open("wb")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "ops.supervise", str(procfile)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = lambda: (tmp_path / "supervisor.log").read_text(errors="replace")  # noqa: E731
    try:
        wait_until(lambda: worker_is_ready(env["REDIS_URL"], node), 60, "the supervised worker")
        first = app.control.inspect(destination=[node], timeout=2).stats()[node]["pid"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: "exited: inbound (terminated by SIGKILL" in output(), 30, "supervisord to see the crash")
        wait_until(lambda: worker_is_ready(env["REDIS_URL"], node), 60, f"the restarted worker\n{output()}")
        second = app.control.inspect(destination=[node], timeout=2).stats()[node]["pid"]
        assert second != first
        supervisor.send_signal(signal.SIGINT)  # what Ctrl-C sends
        supervisor.wait(60)
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
        log.close()
    text = output()
    assert "Warm shutdown" in text, text[-3000:]
    assert "WorkerLostError" not in text
    assert "stopped: inbound (exit status 0)" in text, text[-3000:]
