"""The Celery app of the fleet. Importing it opens nothing: pools open per child after fork."""

from __future__ import annotations

from celery import Celery

from shared.settings import get_settings
from workers.config import build_celery_config
from workers.queues import TASK_MODULES

app = Celery("fleet", include=list(TASK_MODULES))
app.conf.update(build_celery_config(get_settings()))

import workers.signals  # noqa: E402,F401  (connects the process hooks)
