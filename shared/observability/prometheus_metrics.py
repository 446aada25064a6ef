"""The fleet's Prometheus histograms and counters, shared by every process of a host through files.

prometheus_client's multiprocess mode: each process writes its samples to memory-mapped files in the host's
metrics directory (`PROMETHEUS_MULTIPROC_DIR`, set by `fleet worker`/`fleet beat` from the settings before
Celery starts) and the health service sums them at each scrape. The library names those files by process id;
worker children are replaced every `worker_max_tasks_per_child` tasks, so the directory would gain two files
every few minutes and every scrape would read all of them. Files are named by the child's slot instead (the
worker's node name and Celery's reused pool index): a replacement child carries on its predecessor's counts,
the counters never go backwards, and the directory holds a bounded number of files.

Without the directory (tests of single functions, one-off commands) the same metrics count in memory only.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Histogram, values

from shared.core.resources import process_id

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
OUTCOMES = ("succeeded", "retried", "failed", "dead_lettered")

_node = {"name": ""}
_slot: dict[str, Any] = {"pid": None, "id": ""}
_statement_series: dict[tuple[str, str], Any] = {}  # (table, operation) -> its histogram, as labels() gives it


def set_node_name(name: str) -> None:
    """The worker's node name (from celeryd_init, before the pool forks): part of every child's file name."""
    _node["name"] = re.sub(r"[^A-Za-z0-9@._-]", "_", name)


def process_slot() -> str:
    """`<node>-<pool index>` in a worker child, `<node>-main` in a worker's main process, else the pid.

    Called on every sample update by prometheus_client (twice an observation), so it is computed once per
    process, and the process is told apart by the registry's fork-kept id, not a system call.
    """
    pid = process_id()
    if _slot["pid"] != pid:
        from celery.utils.log import current_process_index

        index = current_process_index()
        if _node["name"]:
            _slot["id"] = f"{_node['name']}-{index if index is not None else 'main'}"
        else:
            _slot["id"] = str(pid)
        _slot["pid"] = pid
    return _slot["id"]


if os.environ.get(ENV):
    # The library's documented escape hatch for the file suffix (client_python issue 509); it must be in place
    # before the first metric below is created.
    values.ValueClass = values.MultiProcessValue(process_identifier=process_slot)

STATEMENT_SECONDS = Histogram(
    "fleet_statement_seconds", "time of one SQL statement", ("table", "operation"), buckets=FAST
)
POOL_WAIT_SECONDS = Histogram(
    "fleet_pool_wait_seconds", "time to borrow a connection from the process's pool", ("role",), buckets=FAST
)
TASK_SECONDS = Histogram("fleet_task_seconds", "run time of one task", ("task",), buckets=SLOW)
QUEUE_WAIT_SECONDS = Histogram(
    "fleet_queue_wait_seconds", "from publishing (or a delayed task's due time) to its start", ("queue",), buckets=SLOW
)
TASK_OUTCOMES = Counter("fleet_task_outcomes", "tasks finished, by task and outcome", ("task", "outcome"))


def observe_statement(table: str | None, operation: str, seconds: float) -> None:
    """Every statement's time: its labelled series is looked up once per (table, operation), not through
    `labels()` (which checks and joins the values under a lock) for each of the statements of a message."""
    key = (table or "none", operation)
    series = _statement_series.get(key)
    if series is None:
        series = _statement_series[key] = STATEMENT_SECONDS.labels(*key)
    series.observe(seconds)


def observe_pool_wait(role: str, seconds: float) -> None:
    POOL_WAIT_SECONDS.labels(role).observe(seconds)


def observe_task(task: str, seconds: float) -> None:
    TASK_SECONDS.labels(task).observe(seconds)


def count_outcome(task: str, outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown task outcome {outcome!r}")
    TASK_OUTCOMES.labels(task, outcome).inc()


def count_dead_letter(source: str) -> None:
    """A dead letter counts against the task that filed it; outside a task (the broker's consumer, a
    command), against its source."""
    from celery import current_task

    TASK_OUTCOMES.labels(current_task.name if current_task else source, "dead_lettered").inc()


SENT_AT_HEADER = "fleet_sent_at"


def observe_queue_wait(queue: str, request: Mapping[str, Any] | Any, now: float | None = None) -> float | None:
    """Seconds a task waited in its queue, from the `fleet_sent_at` header our producers stamp (or from its
    due time when it was delayed); None for a message without the stamp (a producer in another language)."""
    sent_at = _number(_get(request, SENT_AT_HEADER))
    if sent_at is None:
        return None
    due = _due_time(_get(request, "eta"))
    started = time.time() if now is None else now
    waited = max(0.0, started - max(sent_at, due or 0.0))
    QUEUE_WAIT_SECONDS.labels(queue).observe(waited)
    return waited


def _get(request: Mapping[str, Any] | Any, name: str) -> Any:
    if isinstance(request, Mapping):
        return request.get(name)
    return getattr(request, name, None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number > 0 else None


def _due_time(eta: Any) -> float | None:
    if not eta:
        return None
    from datetime import datetime

    try:
        moment = eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None
