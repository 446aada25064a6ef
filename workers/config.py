"""Celery configuration built from settings: the one place the app's behaviour is decided."""

from __future__ import annotations

from typing import Any

from kombu import Queue as KombuQueue

from beat_schedule import build_beat_schedule
from shared.core.kombu_contract import unacked_keys
from shared.core.settings import Settings, WorkerType
from shared.core.topology import QUEUE_OF_WORKER, Queue, route_task


def transport_options(settings: Settings, worker_type: WorkerType | None) -> dict[str, Any]:
    """Redis transport options; each worker type keeps its own unacked index and visibility timeout.

    Kombu re-delivers any unacked message older than the visibility timeout of whichever consumer scans the
    index. With one shared index, the short timeout that recovers a lost chat message within minutes would
    also re-deliver an hour-long backup that is still running. Separate indexes let each type use a timeout
    just above its own hard time limit.
    """
    if worker_type is None:
        # Producers, beat and Flower never restore messages; use the longest timeout to be safe.
        timeout = max(settings.workers.of(wt).visibility_timeout for wt in WorkerType)
        suffix = "producer"
    else:
        timeout = settings.workers.of(worker_type).visibility_timeout
        suffix = QUEUE_OF_WORKER[worker_type].value
    unacked = unacked_keys(suffix)
    return {
        "visibility_timeout": timeout,
        "unacked_key": unacked.hash,
        "unacked_index_key": unacked.index,
        "unacked_mutex_key": unacked.mutex,
        # The restore mutex is held for milliseconds; if its holder dies, do not block recovery for 5 minutes.
        "unacked_mutex_expire": 60,
        # One list per queue (no priority lists): a worker then takes a message and writes kombu's unacked record
        # of it in one Lua step (workers/broker.py), so a main process killed mid-delivery loses nothing.
        "priority_steps": [0],
        "socket_keepalive": True,
        "health_check_interval": 25,
    }


def build_celery_config(settings: Settings) -> dict[str, Any]:
    worker_type = settings.worker_type
    redis_url = settings.redis_url.get_secret_value()
    options = transport_options(settings, worker_type)
    config: dict[str, Any] = {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "broker_transport_options": options,
        "result_backend_transport_options": {"visibility_timeout": options["visibility_timeout"]},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": settings.timezone,
        "enable_utc": True,
        # At-least-once delivery: ack after the task ran, take one message at a time.
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_reject_on_worker_lost": False,  # opted into per task, only where a repeat is safe
        # A task running when the broker connection drops finishes; its ack then fails on the dead channel and
        # Redis delivers it again after the visibility timeout (every task is idempotent). Cancelling instead
        # (True) stores the cancellation in the result backend, the same Redis that just went away, inside the
        # consumer's connection-error handler: that ended the worker ("Unrecoverable error") on a Redis restart.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_ignore_result": True,
        "result_expires": 3600,
        "task_queues": [KombuQueue(queue.value, routing_key=queue.value) for queue in Queue],
        "task_default_queue": Queue.MAINTENANCE.value,
        "task_create_missing_queues": False,
        "task_routes": (route_task,),
        "worker_consumer": "workers.broker:GuardedConsumer",
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_max_tasks_per_child": 1000,  # a worker without a type; each type has its own setting
        "worker_max_memory_per_child": 400_000,  # KiB
        "beat_schedule": build_beat_schedule(settings),
        "beat_max_loop_interval": 60,
    }
    if worker_type is not None:
        limits = settings.workers.of(worker_type)
        config["task_soft_time_limit"] = limits.soft_time_limit
        config["task_time_limit"] = limits.time_limit
        config["worker_max_tasks_per_child"] = limits.max_tasks_per_child
    return config
