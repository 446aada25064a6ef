"""The inbound worker of the per-salon cap design (bench/salon_cap.py), for bench/fairness.py: the fleet's app
and tasks, consuming the intake itself with no lanes router, `receive_message` and `drain_chat` behind their
salon's semaphore.

    FLEET_WORKER_TYPE=inbound FLEET_BENCH_SALON_CAP=1 \\
        .venv/bin/python -m celery -A bench.salon_cap_worker worker --queues inbound --concurrency 2
"""

from __future__ import annotations

from celery.signals import worker_ready

import workers.inbound  # noqa: F401  (registers the tasks gated below)
from bench.salon_cap import capped
from shared.core.topology import TaskName
from workers import signals
from workers.app import app

for name in (TaskName.RECEIVE_MESSAGE, TaskName.DRAIN_CHAT):
    task_class = type(app.tasks[name])
    task_class.run = capped(task_class.run)

# No router in this design: the workers consume the intake itself.
worker_ready.disconnect(signals._start_lanes_router)

__all__ = ["app"]
