"""Process hooks: Sentry in every process type, one pool per worker child, tags on every task."""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from celery import Task
from celery.signals import (
    beat_init,
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
)

from shared.pool import close_process_pool, open_process_pool
from shared.sentry import init_sentry
from shared.settings import get_settings
from workers.queues import queue_for_task

log = logging.getLogger(__name__)


def worker_role() -> str:
    worker_type = get_settings().worker_type
    return worker_type.value if worker_type else "worker"


@celeryd_init.connect
def _init_worker_main(**_: Any) -> None:
    # Sentry's transport thread restarts itself in each forked child, so one init here covers them all.
    init_sentry(get_settings(), component=worker_role())


@beat_init.connect
def _init_beat(**_: Any) -> None:
    init_sentry(get_settings(), component="beat")


@worker_process_init.connect
def _open_child_pool(**_: Any) -> None:
    # Must return within Celery's 4 s limit: open without waiting, connections fill in the background.
    open_process_pool(role=worker_role(), wait=False)


@worker_process_shutdown.connect
def _close_child_pool(**_: Any) -> None:
    close_process_pool()


@task_postrun.connect
def _publish_process_stats(**_: Any) -> None:
    """Every child reports its pool and query figures (at most every 15 s) for the health service."""
    import redis

    from shared.health.process_stats import publish
    from shared.redis_clients import process_redis

    settings = get_settings()
    try:
        publish(
            process_redis(settings.redis_url.get_secret_value()), worker_role(), settings.health.pool_report_ttl_seconds
        )
    except redis.RedisError as exc:  # monitoring must never fail a task
        log.warning("could not publish process stats: %s", type(exc).__name__)


@task_prerun.connect
def _tag_task(task: Task | None = None, **_: Any) -> None:
    if task is None or task.name.startswith("celery."):
        return
    sentry_sdk.set_tag("queue", queue_for_task(task.name).value)
    sentry_sdk.set_tag("operation", task.name)
