"""The Celery app of the fleet. Importing it opens nothing: pools open per child after fork.

A worker process imports only its own worker type's task modules; `workers.signals` then removes every other
task (Celery's canvas built-ins included) and the remote-control commands the fleet does not use.
"""

from __future__ import annotations

from celery import Celery

from shared.core.settings import get_settings
from shared.core.topology import task_modules_of
from workers.broker import use_quarantining_transport
from workers.config import build_celery_config

use_quarantining_transport()
app = Celery("fleet", include=list(task_modules_of(get_settings().worker_type)), task_cls="workers.base:FleetTask")
app.conf.update(build_celery_config(get_settings()))

import workers.signals  # noqa: E402,F401  (connects the process hooks)
