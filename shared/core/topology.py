"""The fleet's queues and which tasks go to which: routing is by the module a task lives in."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from shared.core.settings import WorkerType


class Queue(StrEnum):
    INBOUND = "inbound"  # the intake: producers publish here; the router deals it out (shared/inbound/lanes.py)
    YCLIENTS = "yclients"
    MAINTENANCE = "maintenance"  # WhatsApp key maintenance and the health jobs
    BACKUPS = "backups"
    INBOUND_READY = "inbound.ready"  # what the inbound workers consume: filled in turns across salons


QUEUE_OF_WORKER: dict[WorkerType, Queue] = {
    WorkerType.INBOUND: Queue.INBOUND,
    WorkerType.YCLIENTS: Queue.YCLIENTS,
    WorkerType.KEYS: Queue.MAINTENANCE,
    WorkerType.BACKUPS: Queue.BACKUPS,
}

QUEUE_OF_MODULE: dict[str, Queue] = {
    "workers.inbound": Queue.INBOUND,
    "workers.yclients": Queue.YCLIENTS,
    "workers.keys": Queue.MAINTENANCE,
    "workers.health": Queue.MAINTENANCE,
    "workers.backups": Queue.BACKUPS,
}

TASK_MODULES: tuple[str, ...] = tuple(QUEUE_OF_MODULE)


class TaskName(StrEnum):
    """Every fleet task, named once: tasks register under these, and senders and beat call them by them.

    A name is its module and function, so it routes to its module's queue (`queue_for_task`)."""

    RECEIVE_MESSAGE = "workers.inbound.receive_message"
    DRAIN_CHAT = "workers.inbound.drain_chat"
    DELIVER_REPLY = "workers.inbound.deliver_reply"
    INBOUND_SWEEP = "workers.inbound.sweep"
    SEND_REMINDERS = "workers.inbound.send_reminders"
    INBOUND_PING = "workers.inbound.ping"
    INBOUND_REPORT = "workers.inbound.report_process"

    SYNC_ENTITY = "workers.yclients.sync_entity"
    SYNC_ALL = "workers.yclients.sync_all"
    PUSH_BOOKING = "workers.yclients.push_booking"
    APPLY_WEBHOOK = "workers.yclients.apply_webhook"
    YCLIENTS_SWEEP = "workers.yclients.sweep"
    RECONCILE_ALL = "workers.yclients.reconcile_all"
    RECONCILE_SALON = "workers.yclients.reconcile_salon"
    YCLIENTS_PING = "workers.yclients.ping"
    YCLIENTS_REPORT = "workers.yclients.report_process"

    KEYS_CLEANUP = "workers.keys.cleanup"
    CHECK_SESSIONS = "workers.keys.check_sessions"
    KEYS_PING = "workers.keys.ping"
    KEYS_REPORT = "workers.keys.report_process"

    HEARTBEAT = "workers.health.heartbeat"
    COLLECT_HEALTH = "workers.health.collect"
    DELIVER_ALERTS = "workers.health.deliver_alerts"
    FILE_DEAD_LETTER_SPOOL = "workers.health.file_dead_letter_spool"
    APPLY_RETENTION = "workers.health.apply_retention"

    BACKUP = "workers.backups.backup"
    RESTORE_DRILL = "workers.backups.drill"
    BACKUPS_PING = "workers.backups.ping"
    BACKUPS_REPORT = "workers.backups.report_process"


# Each worker type answers a ping and reports its children's figures on its own queue.
PING_OF_WORKER: dict[WorkerType, TaskName] = {
    WorkerType.INBOUND: TaskName.INBOUND_PING,
    WorkerType.YCLIENTS: TaskName.YCLIENTS_PING,
    WorkerType.KEYS: TaskName.KEYS_PING,
    WorkerType.BACKUPS: TaskName.BACKUPS_PING,
}
REPORT_OF_WORKER: dict[WorkerType, TaskName] = {
    WorkerType.INBOUND: TaskName.INBOUND_REPORT,
    WorkerType.YCLIENTS: TaskName.YCLIENTS_REPORT,
    WorkerType.KEYS: TaskName.KEYS_REPORT,
    WorkerType.BACKUPS: TaskName.BACKUPS_REPORT,
}

# The queue each worker type consumes: its own, except the inbound workers, which take the fair-share list.
CONSUMED_BY_WORKER: dict[WorkerType, Queue] = {**QUEUE_OF_WORKER, WorkerType.INBOUND: Queue.INBOUND_READY}


def published_to(queue: str) -> str:
    """The queue producers published a consumed message to (what operators and dead letters name)."""
    return Queue.INBOUND.value if queue == Queue.INBOUND_READY.value else queue


def task_modules_of(worker_type: WorkerType | None) -> tuple[str, ...]:
    """The task modules a process imports: a worker only its own queue's, anyone else (producers, beat) all."""
    if worker_type is None:
        return TASK_MODULES
    queue = QUEUE_OF_WORKER[worker_type]
    return tuple(module for module, module_queue in QUEUE_OF_MODULE.items() if module_queue is queue)


def task_allowed(task_name: str, worker_type: WorkerType) -> bool:
    """Whether a worker of this type may run the task: only its own modules' tasks, never Celery's built-ins."""
    return task_name.rpartition(".")[0] in task_modules_of(worker_type)


class UnroutedTask(LookupError):
    """A task name that belongs to no worker module: it would sit in a queue nobody consumes."""


def queue_for_task(task_name: str) -> Queue:
    module = task_name.rpartition(".")[0]
    try:
        return QUEUE_OF_MODULE[module]
    except KeyError:
        raise UnroutedTask(f"task {task_name!r} is not in any worker module {sorted(QUEUE_OF_MODULE)}") from None


def route_task(name: str, args: object, kwargs: object, options: object, task: object = None, **kw: object):
    """Celery `task_routes` hook; Celery's own tasks (celery.*) keep their default routing."""
    if name.startswith("celery."):
        return None
    return {"queue": queue_for_task(name).value}


HIDDEN_ARGUMENTS = "<hidden: personal data>"


def arguments_are_private(task_name: str) -> bool:
    """Inbound tasks carry clients' phones and messages: their arguments never appear in events or Flower."""
    return QUEUE_OF_MODULE.get(task_name.rpartition(".")[0]) is Queue.INBOUND


def hide_private_arguments(headers: dict[str, Any], task_name: str) -> None:
    """Replace the argument reprs a message carries (task events, Flower and its state show them)."""
    if arguments_are_private(task_name):
        headers["argsrepr"] = headers["kwargsrepr"] = HIDDEN_ARGUMENTS
