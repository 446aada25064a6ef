"""Fleet processes in tests: started like the Procfile starts them (ops/harness/processes.py, which the
benchmarks use too), restarted like a supervisor would, and waited for until they consume."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import redis

from ops.harness.processes import ROOT, FleetProcess, wait_until, worker_is_ready
from shared.core.kombu_contract import queue_key
from shared.core.topology import Queue
from shared.inbound.lanes import RING

__all__ = [
    "INBOUND_LISTS",
    "ROOT",
    "FleetProcess",
    "Supervised",
    "flush_redis",
    "running_worker",
    "running_workers",
    "wait_for_idle",
    "wait_until",
    "worker_is_ready",
]

# Where inbound messages can wait: the intake, the salons' lanes (the ring names those with a backlog), ready.
INBOUND_LISTS = (queue_key(Queue.INBOUND), RING, queue_key(Queue.INBOUND_READY))

# Celery's own log lines for a task's life in a worker: "Task name[id] received", then one of the endings.
_TASK_EVENT = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] (received|succeeded|retry|raised|failed|rejected|revoked)")


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
                self.restarts += 1
                time.sleep(1.0)  # RestartSec
                # `generation` moves only with `current`: a test waiting for the new generation's "ready." read the
                # dead one's log meanwhile, went on before the new worker had connected, and restarted Redis under it.
                self.current = self._start(self.generation + 1)
                self.generation += 1
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.current.stop()


def _start_worker(
    worker_type: str, env: Mapping[str, str], tmp_path: Path, concurrency: int, node: str | None
) -> FleetProcess:
    node = node or f"{worker_type}-{uuid.uuid4().hex[:6]}@test"
    process = FleetProcess(
        ["worker", worker_type, "--concurrency", str(concurrency), "--name", node, "--loglevel", "INFO"],
        env,
        tmp_path / f"{node}.log",
    )
    process.node = node  # type: ignore[attr-defined]
    return process


def _wait_ready(process: FleetProcess, env: Mapping[str, str]) -> None:
    node = process.node  # type: ignore[attr-defined]
    try:
        wait_until(
            lambda: process.proc.poll() is not None or worker_is_ready(env["REDIS_URL"], node),
            30,
            f"worker {node}",
        )
    except TimeoutError:
        raise AssertionError(f"worker {node} did not come up:\n{process.output()}") from None
    assert process.proc.poll() is None, f"worker {node} exited:\n{process.output()}"


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
    process = _start_worker(worker_type, env, tmp_path, concurrency, node)
    try:
        if ready:
            _wait_ready(process, env)
        yield process
    finally:
        process.stop()


@contextmanager
def running_workers(
    worker_types: Iterable[str], env: Mapping[str, str], tmp_path: Path, *, concurrency: int = 1
) -> Iterator[dict[str, FleetProcess]]:
    """Several worker types started side by side and waited for together, then stopped side by side: the
    same fleet as one `running_worker` each, in the time of the slowest start and stop instead of their sum."""
    processes: dict[str, FleetProcess] = {}
    try:
        for worker_type in worker_types:
            processes[worker_type] = _start_worker(worker_type, env, tmp_path, concurrency, None)
        for process in processes.values():
            _wait_ready(process, env)
        yield processes
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.stop()


def tasks_in_hand(output: str) -> set[str]:
    """Ids of the tasks a worker's log shows received and not yet ended (an ETA task counts as in hand)."""
    last: dict[str, str] = {}
    for _name, task_id, event in _TASK_EVENT.findall(output):
        last[task_id] = event
    return {task_id for task_id, event in last.items() if event == "received"}


def wait_for_idle(
    workers: list[FleetProcess], redis_url: str, queues: tuple[str, ...], *, at_least: int = 1, timeout: float = 60
) -> None:
    """The positive signal a negative check needs: at least `at_least` tasks ended, none in any worker's hand
    and every queue empty, twice in a row (a task ending may have just sent the next one).

    After this, "no second reply" is a fact about work that was done, not about a window that was long enough.
    """
    client = redis.Redis.from_url(redis_url)

    def idle() -> bool:
        outputs = [worker.output() for worker in workers]
        ended = sum(event != "received" for text in outputs for _, _, event in _TASK_EVENT.findall(text))
        return (
            ended >= at_least
            and not any(tasks_in_hand(text) for text in outputs)
            and not any(client.llen(queue) for queue in queues)
        )

    wait_until(lambda: idle() and (time.sleep(0.3) or idle()), timeout, "the workers to finish every task")


def flush_redis(url: str) -> None:
    redis.Redis.from_url(url).flushdb()
