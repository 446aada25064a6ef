"""The yclients worker's lane for CRM writes: long tasks never take its last free child.

Syncs (minutes on a large salon, up to the soft time limit) and the short tasks that carry a client's booking,
move or cancellation into YClients share the one `yclients` queue. So that a booking never waits behind a
sync, each yclients worker (each node: its own children, whose prefetch it controls) admits at most
`concurrency - 1` long tasks at a time; the child left over always comes back to the queue within seconds,
where the CRM operations, webhooks and sweeps are.

A long task that finds every slot of its worker taken is deferred: sent again as the same task, due a few
seconds later (`FleetTask.defer`: no retry spent, no failure), with its place kept in the worker's first-come
line, so one deferred many times still runs once the syncs ahead of it have. Its per-(company, entity) hold
stays its own while it waits, so beat's next fan-out of the same sync is skipped instead of piling up.

The slots are leases in Redis (`shared/core/slots.py`) renewed while the task runs: a child killed mid-sync
(hard time limit, OOM) frees its slot within `SLOT_LEASE_SECONDS`. With one process (`--concurrency 1`) there
is no child to keep free: long tasks run as before, and the worker says so when it starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.core.redis_clients import process_redis
from shared.core.settings import get_settings
from shared.core.slots import KeptSlot, LeasedSlots, hold, let_go
from workers.base import FleetTask

log = logging.getLogger(__name__)

SLOT_LEASE_SECONDS = 60.0  # a dead child's slot is free again within this; renewed every third of it
WAIT_BASE_SECONDS = 5.0  # a deferred task comes back after this times (its place in the line + 1) ...
WAIT_MAX_SECONDS = 30.0  # ... at most this
PLACE_KEPT_SECONDS = 90.0  # a place in the line lapses when its task has not asked again for this long


@dataclass(frozen=True)
class Lane:
    """This worker's node name and its process count, known in the main process before the pool forks."""

    node: str
    concurrency: int

    @property
    def long_slots(self) -> int:
        return self.concurrency - 1


_lane: Lane | None = None


def set_up_lane(node: str, concurrency: int) -> None:
    """Called in a yclients worker's main process (`celeryd_after_setup`, before the pool forks): the children
    inherit it. One process cannot keep a child free: the worker still starts (syncs then run as before), with a
    warning."""
    global _lane
    _lane = Lane(node, concurrency)
    if concurrency < 2:
        log.warning(
            "yclients worker %s runs %s process: no child is kept free for CRM writes, so a client's booking waits"
            " behind a running sync; set FLEET_WORKERS__YCLIENTS__CONCURRENCY (or --concurrency) to 2 or more",
            node,
            concurrency,
        )
    else:
        log.info("yclients worker %s: %s of %s children may run syncs at once", node, lane_slots(), concurrency)


def lane_slots() -> int:
    return _lane.long_slots if _lane is not None else 0


def long_slots_of(node: str) -> LeasedSlots:
    """The long-task slots of one yclients worker (node)."""
    return LeasedSlots(process_redis(get_settings().redis_url.get_secret_value()), f"yclients-long:{node}")


class Turn:
    """A long task's admission: its hold on the work's key and, where the lane exists, its slot."""

    def __init__(self, hold_key: str, holder: str, slot: KeptSlot | None) -> None:
        self.hold_key, self.holder, self.slot = hold_key, holder, slot

    def end(self) -> None:
        """Give the slot and the hold back (the task ran, failed, or is retried later)."""
        if self.slot is not None:
            self.slot.release()
        let_go(process_redis(get_settings().redis_url.get_secret_value()), self.hold_key, self.holder)


def long_task_turn(task: FleetTask, hold_key: str, run_seconds: float) -> Turn | None:
    """Admit a long task on this worker: None when another task holds `hold_key` (the same work is running or
    waiting: skip it); a `Turn` when it may run now; otherwise the task is deferred (this raises Celery's Retry).

    The task's id names it in the hold and the slots, so a deferred or redelivered task finds its own again."""
    client = process_redis(get_settings().redis_url.get_secret_value())
    holder = task.request.id
    if not hold(client, hold_key, holder, run_seconds):
        if _lane is not None:
            long_slots_of(_lane.node).release(holder)  # a deferred task whose hold lapsed: its place goes too
        return None
    if _lane is None or _lane.long_slots < 1:
        return Turn(hold_key, holder, None)  # no lane: not a yclients worker, or one of a single process
    slots = long_slots_of(_lane.node)
    admission = slots.acquire(holder, _lane.long_slots, SLOT_LEASE_SECONDS, PLACE_KEPT_SECONDS)
    if not admission.granted:
        wait = min(WAIT_BASE_SECONDS * (admission.ahead + 1), WAIT_MAX_SECONDS)
        hold(client, hold_key, holder, wait + PLACE_KEPT_SECONDS)  # kept while it waits; lapses if the task is lost
        log.info(
            "%s[%s] waits for a long-task slot of %s (%s ahead in line); back in %.0f s",
            task.name,
            holder,
            _lane.node,
            admission.ahead,
            wait,
        )
        task.defer(wait)
    return Turn(hold_key, holder, slots.keep(holder, SLOT_LEASE_SECONDS))
