"""The simplest alternative to the lanes router, run by bench/fairness.py beside it: no router, and a cap on
how many answering tasks each salon may run at once (as PostHog caps work per team).

The inbound workers consume the intake (`inbound`) directly, first in, first out. `receive_message` and
`drain_chat` first take a slot of their salon's semaphore in Redis (a sorted set of holders, each with a lease,
so a killed holder's slot frees itself); a task whose salon is at its cap puts a copy of itself at the end of
the intake and returns at once. A flooding salon then holds at most `cap` worker processes, and the others
serve whatever comes next in the intake, but a quiet salon's message still waits for the workers to pass
over every flood message queued before it.

This module holds the semaphore and the gate; `bench/salon_cap_worker.py` is the worker that uses them.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from shared.core.settings import WorkerType, get_settings
from shared.core.topology import TaskName

CAP_KEY = "fleet:salon-cap:"
RESCHEDULED = "fleet:salon-cap:rescheduled"  # how many times a task was put back, for the benchmark's report

# KEYS[1]: the salon's holders (holder -> lease end). ARGV: now, lease end, cap, holder, key lifetime (ms).
TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class SalonCap:
    """A counting semaphore per salon, in Redis: at most `cap` holders, each slot leased."""

    def __init__(self, client: redis.Redis, cap: int, lease_seconds: float) -> None:
        self.client = client
        self.cap = cap
        self.lease_seconds = lease_seconds  # past the task's hard time limit: no slot ends under a running task
        self._take = client.register_script(TAKE_SLOT)

    def take(self, company: int, holder: str) -> bool:
        now = time.time()
        args = [now, now + self.lease_seconds, self.cap, holder, int(self.lease_seconds * 1000)]
        return bool(self._take(keys=[f"{CAP_KEY}{company}"], args=args))

    def release(self, company: int, holder: str) -> None:
        self.client.zrem(f"{CAP_KEY}{company}", holder)

    def count_rescheduled(self) -> None:
        self.client.incr(RESCHEDULED)


def company_of(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The salon an answering task works for: the received payload's company, a drain's first argument."""
    if task_name == TaskName.RECEIVE_MESSAGE:
        payload = args[0] if args else kwargs.get("payload")
        company = payload.get("company_id") if isinstance(payload, dict) else None
    else:
        company = args[0] if args else kwargs.get("company_id")
    return company if isinstance(company, int) and not isinstance(company, bool) else None


_cap: SalonCap | None = None


def salon_cap() -> SalonCap:
    """One client per worker child, made on first use (after fork)."""
    global _cap
    if _cap is None:
        settings = get_settings()
        client = redis.Redis.from_url(settings.redis_url.get_secret_value())
        lease = settings.workers.of(WorkerType.INBOUND).time_limit + 5.0
        _cap = SalonCap(client, int(os.environ.get("FLEET_BENCH_SALON_CAP", "1")), lease)
    return _cap


def capped(run: Callable[..., Any]) -> Callable[..., Any]:
    """The task body behind its salon's semaphore; at the cap, the task goes to the end of the intake."""

    @functools.wraps(run)
    def gated(task: Any, *args: Any, **kwargs: Any) -> Any:
        company = company_of(task.name, args, kwargs)
        if company is None:
            return run(task, *args, **kwargs)
        holder = task.request.id or uuid.uuid4().hex
        cap = salon_cap()
        if not cap.take(company, holder):
            task.apply_async(args, kwargs)
            cap.count_rescheduled()
            return "rescheduled"
        try:
            return run(task, *args, **kwargs)
        finally:
            cap.release(company, holder)

    return gated
