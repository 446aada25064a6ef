"""Flower against the test broker: credentials required, and tasks of every worker type visible in its API."""

from __future__ import annotations

import base64
import json
import socket
import stat
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from shared.core.settings import WorkerType
from tests.support.processes import FleetProcess, running_workers, wait_until
from workers.app import app

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flower_api(port: int, path: str, auth: str | None) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def test_flower_sees_tasks_of_every_worker_type_and_requires_its_credentials(
    fleet_env: dict[str, str], migrated: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {**fleet_env, "FLEET_FLOWER_PORT": str(port), "FLEET_FLOWER_USER": "ops", "FLEET_FLOWER_PASSWORD": "s3cret"}
    with ExitStack() as stack:
        stack.enter_context(running_workers([worker_type.value for worker_type in WorkerType], env, tmp_path))
        flower = FleetProcess(["flower"], env, tmp_path / "flower.log")
        stack.callback(flower.stop)
        wait_until(
            lambda: flower_api(port, "/api/workers", "ops:s3cret")[0] == 200, 30, f"Flower to answer\n{flower.output()}"
        )
        assert flower_api(port, "/api/workers", None)[0] == 401
        assert flower_api(port, "/api/workers", "ops:wrong")[0] == 401

        def succeeded_by_type() -> set[str]:
            status, tasks = flower_api(port, "/api/tasks", "ops:s3cret")
            if status != 200 or not isinstance(tasks, dict):
                return set()
            return {
                task["name"].split(".")[1]
                for task in tasks.values()
                if task.get("state") == "SUCCESS" and (task.get("name") or "").endswith(".ping")
            }

        def ping_the_unseen() -> set[str]:
            """Flower only sees events after its receiver is up: ping again each type it has not seen yet."""
            seen = succeeded_by_type()
            for worker_type in WorkerType:
                if worker_type.value not in seen:
                    app.send_task(f"workers.{worker_type.value}.ping").get(timeout=20)
            return seen if seen == {wt.value for wt in WorkerType} else set()

        seen = wait_until(ping_the_unseen, 60, "a successful ping of every worker type in Flower", interval=1.0)
    assert seen == {"inbound", "yclients", "keys", "backups"}
    assert "s3cret" not in flower.output()
    # Flower's saved state holds task history: the state directory and its files are this user's alone.
    state = Path(env["FLEET_STATE_DIR"])
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    saved = [path for path in state.iterdir() if path.name.startswith("flower.db")]
    assert saved, sorted(path.name for path in state.iterdir())
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in saved} == dict.fromkeys(
        (path.name for path in saved), 0o600
    )
