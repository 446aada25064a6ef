"""The Celery app of the fleet. Importing it opens nothing: pools open per child after fork.

A worker process imports only its own worker type's task modules; `workers.signals` then removes every other
task (Celery's canvas built-ins included) and the remote-control commands the fleet does not use.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.app.amqp import AMQP

from shared.core.settings import get_settings
from shared.core.topology import HIDDEN_ARGUMENTS, arguments_are_private, task_modules_of
from workers.broker import use_quarantining_transport
from workers.config import build_celery_config


class PrivateArgumentsAMQP(AMQP):
    """Inbound tasks' argument reprs hidden where Celery makes the message. Celery builds the task-sent event
    (task_send_sent_event, which Flower keeps) from the reprs before `before_task_publish` may replace them in
    the headers: hidden only there, every Python sender's task-sent event carried the phone and the text."""

    def as_task_v2(self, task_id: str, name: str, *args: Any, **kwargs: Any) -> Any:
        if arguments_are_private(name):
            kwargs["argsrepr"] = kwargs["kwargsrepr"] = HIDDEN_ARGUMENTS
        return super().as_task_v2(task_id, name, *args, **kwargs)


use_quarantining_transport()
app = Celery(
    "fleet",
    include=list(task_modules_of(get_settings().worker_type)),
    task_cls="workers.base:FleetTask",
    amqp=PrivateArgumentsAMQP,
)
app.conf.update(build_celery_config(get_settings()))

import workers.signals  # noqa: E402,F401  (connects the process hooks)
