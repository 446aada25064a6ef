"""Start and stop real fleet processes (workers, beat) for tests, the way Procfile starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
FLEET = [sys.executable, "-m", "workers.cli"]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class FleetProcess:
    """One `fleet ...` child process; its output goes to a log file that failures print."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [*FLEET, *args],
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class Supervised:
    """Restarts a fleet process whenever it dies, as systemd (Restart=always) or honcho's operator would."""

    def __init__(self, start: Callable[[int], FleetProcess]) -> None:
        self._start = start
        self.generation = 0
        self.current = start(0)
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self.current.proc.poll() is not None:
                self.generation += 1
                self.restarts += 1
                time.sleep(1.0)  # RestartSec
                self.current = self._start(self.generation)
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.current.stop()


def worker_is_ready(redis_url: str, node: str) -> bool:
    """A worker is consuming once its node answers a broadcast ping."""
    from workers.app import app

    replies = app.control.ping(destination=[node], timeout=0.5) or []
    return any(node in reply for reply in replies)


@contextmanager
def running_worker(
    worker_type: str,
    env: Mapping[str, str],
    tmp_path: Path,
    *,
    concurrency: int = 1,
    ready: bool = True,
    node: str | None = None,
) -> Iterator[FleetProcess]:
    node = node or f"{worker_type}-{uuid.uuid4().hex[:6]}@test"
    process = FleetProcess(
        ["worker", worker_type, "--concurrency", str(concurrency), "--name", node, "--loglevel", "INFO"],
        env,
        tmp_path / f"{node}.log",
    )
    process.node = node  # type: ignore[attr-defined]
    try:
        if ready:
            try:
                wait_until(
                    lambda: process.proc.poll() is not None or worker_is_ready(env["REDIS_URL"], node),
                    30,
                    f"worker {node}",
                )
            except TimeoutError:
                raise AssertionError(f"worker {node} did not come up:\n{process.output()}") from None
            assert process.proc.poll() is None, f"worker {node} exited:\n{process.output()}"
        yield process
    finally:
        process.stop()


def flush_redis(url: str) -> None:
    redis.Redis.from_url(url).flushdb()
