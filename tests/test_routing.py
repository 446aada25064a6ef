"""Every task has a queue that a worker type consumes; each worker type consumes only its own queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from beat_schedule import build_beat_schedule
from shared.core.settings import WorkerType, get_settings
from shared.core.topology import CONSUMED_BY_WORKER, QUEUE_OF_WORKER, Queue, UnroutedTask, queue_for_task
from shared.inbound.lanes import INTAKE
from tests.support.processes import running_workers
from workers.app import app

app.loader.import_default_modules()
OUR_TASKS = sorted(name for name in app.tasks if not name.startswith("celery."))
CONSUMED = {queue.value for queue in QUEUE_OF_WORKER.values()}


def test_every_queue_has_exactly_one_worker_type() -> None:
    """Each queue is consumed by one worker type; the inbound intake by the inbound workers' router, which
    deals it out to `inbound.ready` (shared/inbound/lanes.py)."""
    consumed = [queue.value for queue in CONSUMED_BY_WORKER.values()]
    assert len(consumed) == len(set(consumed))
    assert sorted([*consumed, INTAKE]) == sorted(queue.value for queue in Queue)
    assert sorted(queue.value for queue in QUEUE_OF_WORKER.values()) == sorted(set(Queue) - {Queue.INBOUND_READY})


@pytest.mark.parametrize("task_name", OUR_TASKS)
def test_every_registered_task_routes_to_a_consumed_queue(task_name: str) -> None:
    route = app.amqp.router.route({}, task_name)
    assert route["queue"].name in CONSUMED


@pytest.mark.parametrize("entry", sorted(build_beat_schedule(get_settings())))
def test_every_beat_job_is_registered_routed_and_expires(entry: str) -> None:
    job = build_beat_schedule(get_settings())[entry]
    assert job["task"] in app.tasks, f"beat job {entry} names an unknown task {job['task']}"
    assert queue_for_task(job["task"]).value in CONSUMED
    assert job["options"]["expires"] > 0


def test_a_task_outside_the_worker_modules_is_refused() -> None:
    with pytest.raises(UnroutedTask, match=r"workers\.misc\.job"):
        queue_for_task("workers.misc.job")


@pytest.mark.slow
def test_each_worker_type_consumes_its_own_queue_through_redis(
    fleet_env: dict[str, str], migrated: str, tmp_path: Path
) -> None:
    with running_workers([worker_type.value for worker_type in WorkerType], fleet_env, tmp_path):
        for worker_type in WorkerType:
            answer = app.send_task(f"workers.{worker_type.value}.ping").get(timeout=20)
            # The answer comes from a child of that worker type, through its own pool.
            assert answer["worker_type"] == worker_type.value
            assert answer["backend_pid"] > 0
