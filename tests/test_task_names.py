"""Every fleet task is named once, in `TaskName`: what registers, what is sent, what beat schedules and where
it is routed all come from that one list."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest
from celery import Task

from beat_schedule import build_beat_schedule
from shared.core.settings import WorkerType, get_settings
from shared.core.topology import (
    PING_OF_WORKER,
    QUEUE_OF_MODULE,
    QUEUE_OF_WORKER,
    REPORT_OF_WORKER,
    TASK_MODULES,
    TaskName,
    queue_for_task,
)
from workers.app import app

ROOT = Path(__file__).resolve().parents[1]
MODULES: dict[str, ModuleType] = {name: importlib.import_module(name) for name in TASK_MODULES}
REGISTERED = {name for name in app.tasks if not name.startswith("celery.")}
TASK_NAME_TEXT = re.compile(r"workers\.\w+\.\w+")


def tasks_of(module: ModuleType) -> list[Task]:
    """The tasks a task module holds (pings and reports are made by a helper, but held by their module)."""
    return [value for value in vars(module).values() if isinstance(value, Task)]


def test_every_registered_task_is_in_the_enum_and_every_member_is_registered() -> None:
    assert REGISTERED - set(TaskName) == set(), "a task registered under a name TaskName does not list"
    assert set(TaskName) - REGISTERED == set(), "a TaskName member no task module registers"
    # Plain text, as the name travels in messages and as Flower and the logs show it (not an enum's repr).
    assert {type(name) for name in REGISTERED} == {str}
    assert {type(app.tasks[name].name) for name in REGISTERED} == {str}


@pytest.mark.parametrize("module_name", TASK_MODULES)
def test_each_task_is_named_for_and_routed_to_the_queue_of_its_module(module_name: str) -> None:
    queue = QUEUE_OF_MODULE[module_name]
    for task in tasks_of(MODULES[module_name]):
        assert TaskName(task.name).rpartition(".")[0] == module_name
        assert queue_for_task(task.name) is queue
        assert app.amqp.router.route({}, task.name)["queue"].name == queue.value


def test_every_member_is_held_by_a_task_module() -> None:
    held = {task.name for module in MODULES.values() for task in tasks_of(module)}
    assert held == set(TaskName)


@pytest.mark.parametrize("worker_type", list(WorkerType))
def test_each_worker_types_ping_and_report_go_to_its_own_queue(worker_type: WorkerType) -> None:
    for name in (PING_OF_WORKER[worker_type], REPORT_OF_WORKER[worker_type]):
        assert queue_for_task(name) is QUEUE_OF_WORKER[worker_type]


def test_beat_names_its_jobs_from_the_enum_as_plain_text() -> None:
    """Beat keeps its entries in a schedule file: plain names there survive any later change to the enum."""
    for entry in build_beat_schedule(get_settings()).values():
        assert type(entry["task"]) is str
        assert entry["task"] in set(TaskName)


def test_no_module_spells_a_task_name_outside_the_enum() -> None:
    topology = ROOT / "shared" / "core" / "topology.py"
    offenders = []
    for path in [*(ROOT / "workers").rglob("*.py"), *(ROOT / "shared").rglob("*.py"), ROOT / "beat_schedule.py"]:
        if path == topology:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and TASK_NAME_TEXT.fullmatch(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert offenders == []
