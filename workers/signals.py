"""Process hooks: Sentry in every process type, one pool per worker child, tags on every task."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import sentry_sdk
from celery import Task
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    before_task_publish,
    celeryd_after_setup,
    celeryd_init,
    import_modules,
    task_failure,
    task_internal_error,
    task_postrun,
    task_prerun,
    task_retry,
    task_success,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.log import get_multiprocessing_logger
from celery.worker import control

from shared.core.pool import close_process_pool, open_process_pool
from shared.core.refused_writes import RefusedWrites, refusal_cause
from shared.core.resources import close_all
from shared.core.settings import WorkerType, get_settings
from shared.core.topology import hide_private_arguments, queue_for_task, task_allowed
from shared.observability import prometheus_metrics as metrics
from shared.observability.redaction import install_secret_filter
from shared.observability.sentry import init_sentry

log = logging.getLogger(__name__)

# Remote control the fleet uses: readiness pings and Flower's views, events, revoke and a warm shutdown.
# Everything else is removed from the worker: above all add_consumer (a worker taking another type's queue),
# pool and limit changes, and the memory and config dumps.
REMOTE_CONTROL = frozenset(
    {
        "ping", "hello", "clock", "heartbeat", "stats", "report", "registered", "dump_tasks", "active_queues",
        "active", "dump_active", "reserved", "dump_reserved", "scheduled", "dump_schedule", "revoked",
        "dump_revoked", "query_task", "enable_events", "disable_events", "revoke", "terminate", "shutdown",
    }
)  # fmt: skip


def _refusal(command: str) -> Any:
    """What a removed remote-control command does instead: answer that it is not served, in one line. Flower
    asks for some of them (`conf`) on its own; a deleted handler answered with a KeyError and a traceback in
    the worker's log at every start of the fleet."""

    def refuse(state: Any, **_: Any) -> dict[str, str]:
        return {"error": f"remote control {command!r} is not served by fleet workers"}

    return refuse


def worker_role() -> str:
    worker_type = get_settings().worker_type
    return worker_type.value if worker_type else "worker"


@after_setup_logger.connect
@after_setup_task_logger.connect
def _mask_secrets_in_celery_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    """Workers and beat: Celery has just replaced the root's handlers (and given its task logger, which does not
    propagate, its own); each gets the filter that masks every configured secret."""
    install_secret_filter(get_settings(), logger, get_multiprocessing_logger())


@import_modules.connect
def _mask_secrets_in_flower_logs(**_: Any) -> None:
    """Flower: tornado set up the root's handler before Flower imports the app's modules (here); repeated in
    workers, where it changes nothing."""
    install_secret_filter(get_settings())


@celeryd_init.connect
def _init_worker_main(sender: str | None = None, **_: Any) -> None:
    metrics.set_node_name(sender or "worker")  # before the pool forks: children name their metric files by it
    # Sentry's transport thread restarts itself in each forked child, so one init here covers them all.
    init_sentry(get_settings(), component=worker_role())


@worker_init.connect
def _accept_only_own_work(sender: Any = None, **_: Any) -> None:
    """Before the consumer starts: unregister every task of other worker types and unused remote control."""
    worker_type = get_settings().worker_type
    if worker_type is None:
        log.warning("worker started without a worker type (use `fleet worker TYPE`): it accepts every task")
        return
    tasks = sender.app.tasks
    for name in [name for name in tasks if not task_allowed(name, worker_type)]:
        tasks.unregister(name)
    for command in [command for command in control.Panel.data if command not in REMOTE_CONTROL]:
        control.Panel.data[command] = _refusal(command)
    log.info("%s worker accepts %s", worker_type.value, ", ".join(sorted(tasks)))


@worker_init.connect
def _prepare_what_children_inherit(**_: Any) -> None:
    """Before the pool forks, what every child inherits from the main process.

    The inbound worker's assistant, warmed: a child that replaces a recycled one (`max_tasks_per_child`) answers
    its first message as fast as the rest. Loaded in each child instead, that first message took about 0.3 s
    while the other children carried the whole load: the slowest 1% of messages at half saturation waited 250 ms.

    Then everything the main process holds is frozen out of the garbage collector (`gc.freeze`, Python's own
    advice for a process that forks without exec): a child's collections walk only the objects it made itself,
    not the hundreds of thousands it inherited (a full collection over the assistant's dictionaries took 60 ms
    and more, several times a minute at saturation), and never write into the inherited pages, which stay
    shared with the main process instead of being copied into every child."""
    settings = get_settings()
    if settings.worker_type is WorkerType.INBOUND:
        from shared.assistant import load_assistant
        from shared.assistant.understanding import warm_up

        load_assistant(settings.assistant)
        warm_up()
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()


@celeryd_after_setup.connect
def _keep_a_child_for_crm_writes(instance: Any = None, **_: Any) -> None:
    """The yclients worker's long tasks leave one child free for CRM writes (workers/crm_lane.py); set up in the
    main process once logging is (its warning is seen), before the pool forks, from the node name and process
    count this worker really runs with."""
    if get_settings().worker_type is WorkerType.YCLIENTS and instance is not None:
        from workers.crm_lane import set_up_lane

        set_up_lane(instance.hostname, instance.concurrency)


@worker_ready.connect
def _start_lanes_router(**_: Any) -> None:
    """The inbound worker's main process deals the intake out in turns across salons (workers/lanes.py)."""
    settings = get_settings()
    if settings.worker_type is WorkerType.INBOUND:
        from workers.lanes import start_router

        start_router(settings)


@worker_shutdown.connect
def _stop_lanes_router(**_: Any) -> None:
    from workers.lanes import stop_router

    stop_router()


@beat_init.connect
def _init_beat(**_: Any) -> None:
    init_sentry(get_settings(), component="beat")


@worker_process_init.connect
def _open_child_pool(**_: Any) -> None:
    # Must return within Celery's 4 s limit: open without waiting, connections fill in the background.
    open_process_pool(role=worker_role(), wait=False)


@worker_process_shutdown.connect
def _close_child_resources(**_: Any) -> None:
    close_all()
    close_process_pool()


@before_task_publish.connect
def _hide_private_arguments(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Python producers: inbound tasks' reprs are hidden before the message leaves (the worker hides them too),
    and the time it left is stamped, for the queue wait the worker measures."""
    if headers is not None and sender:
        hide_private_arguments(headers, sender)
        headers[metrics.SENT_AT_HEADER] = time.time()


@task_internal_error.connect
def _keep_what_celery_could_not_run(
    sender: Task | None = None,
    task_id: str | None = None,
    args: Any = None,
    kwargs: Any = None,
    exception: Any = None,
    **_: Any,
) -> None:
    """A message Celery failed on outside the task body (its arguments are not a list and a mapping) is acked."""
    from shared.data.dead_letters import record_dead_letter

    record_dead_letter(
        f"task.{getattr(sender, 'name', 'unknown')}",
        f"Celery could not run the message: {type(exception).__name__}: {exception}",
        {"args": args, "kwargs": kwargs},
        error_type="InvalidTaskMessage",
        task_id=task_id,
    )


_stats_refused = RefusedWrites("this worker child's process report (for the health service)", log)
_stats_failing = False


@task_postrun.connect
def _publish_process_stats(**_: Any) -> None:
    """Every child reports its pool and query figures (at most every 15 s) for the health service; a failure is
    logged once until a report goes through again (a refused write with its cause)."""
    global _stats_failing
    import redis

    from shared.core.redis_clients import process_redis
    from shared.health.process_stats import publish

    settings = get_settings()
    try:
        published = publish(
            process_redis(settings.redis_url.get_secret_value()), worker_role(), settings.health.pool_report_ttl_seconds
        )
    except redis.RedisError as exc:  # monitoring must never fail a task
        cause = refusal_cause(exc)
        if cause is not None:
            _stats_refused.refused(cause)
        elif not _stats_failing:
            log.warning("could not publish process stats: %s", type(exc).__name__)
        _stats_failing = True
        return
    if published is not None:
        _stats_refused.accepted()
        _stats_failing = False


_started: dict[str, float] = {}


@task_prerun.connect
def _tag_task(task: Task | None = None, task_id: str | None = None, **_: Any) -> None:
    if task is None or task.name.startswith("celery."):
        return
    queue = queue_for_task(task.name).value
    sentry_sdk.set_tag("queue", queue)
    sentry_sdk.set_tag("operation", task.name)
    metrics.observe_queue_wait(queue, task.request)
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _time_task(task: Task | None = None, task_id: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id, None) if task_id else None
    if task is not None and started is not None:
        metrics.observe_task(task.name, time.perf_counter() - started)


@task_success.connect
def _count_success(sender: Task | None = None, **_: Any) -> None:
    if sender is not None:
        metrics.count_outcome(sender.name, "succeeded")


@task_retry.connect
def _count_retry(sender: Task | None = None, **_: Any) -> None:
    if sender is not None:
        metrics.count_outcome(sender.name, "retried")


@task_failure.connect
def _count_failure(sender: Task | None = None, **_: Any) -> None:
    if sender is not None:
        metrics.count_outcome(sender.name, "failed")
