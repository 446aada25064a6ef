"""The router of the inbound worker's main process: deals the intake out to the salons' lanes and keeps the
workers' ready list filled in turns (shared/inbound/lanes.py says why and how).

Every inbound worker runs one; they share the dealing (atomic Lua steps) and take turns at routing, so only
one routes at a time (a Redis lease): a single router keeps each salon's messages in the order they came.
What a router took from the intake waits in its own in-flight list until it is placed in the lanes; every
router keeps an alive key fresh and returns the in-flight lists of routers whose key expired to their queue
(the orphan scan). A Redis error pauses the router and never stops the worker: a refused write (Redis out of
memory, read-only, unable to persist) or a lost connection is logged once until the router steps again, and
the pause grows from a quarter of a second to five (shared/core/refused_writes.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis

from shared.core.kombu_contract import ALIVE, INFLIGHT_KEYS, inflight_key, inflight_owner, queue_key
from shared.core.refused_writes import RefusedWrites, refusal_cause
from shared.core.settings import Settings
from shared.inbound.lanes import INTAKE, Lanes

log = logging.getLogger(__name__)

LEASE_KEY = "fleet:lanes:router"
BACKLOG_POLL_SECONDS = 0.05  # lanes hold work and the ready list is full: look again this soon at the latest
HOUSEKEEPING_SECONDS = 0.5  # how often the alive key and the routing lease are renewed
IDLE_BLOCK_SECONDS = 0.5  # nothing anywhere: the routing router blocks on the intake this long at most
FOLLOWER_POLL_SECONDS = 0.1  # a router that is not routing only deals out
REFILL_ROOM = 2  # places free in the ready list before a take wakes the router (or it is empty)


def requeue_orphans(client: Any, own: str | None = None) -> int:
    """Move the in-flight entries of owners presumed dead (no alive key) back to the consuming end of their
    queue, oldest first. Lists left by consumers of an earlier fleet version, which popped through them, are
    returned the same way."""
    moved = 0
    for raw_key in client.smembers(INFLIGHT_KEYS):
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        queue, owner = inflight_owner(key)
        if owner == own or client.exists(ALIVE + owner):
            continue
        while client.lmove(key, queue_key(queue), "RIGHT", "RIGHT") is not None:
            moved += 1
        client.srem(INFLIGHT_KEYS, key)
    if moved:
        log.warning("requeued %s messages taken by routers that died before placing them", moved)
    return moved


class Router(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="fleet-lanes-router", daemon=True)
        self.id = f"router-{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.inflight = inflight_key(INTAKE, self.id)
        self.client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=5)
        self.lanes = Lanes.for_settings(self.client, settings)
        self.served = len(self.lanes.served)
        self.ttl_ms = int(settings.broker_inflight_ttl_seconds * 1000)
        self.orphan_scan_seconds = settings.broker_inflight_ttl_seconds / 2
        self.depth = settings.inbound.ready_depth
        self.batch = settings.inbound.route_batch
        self.stopping = threading.Event()
        self._look_at_intake = True
        self.taken = threading.Event()  # this process's consumer took from the ready list: top it up now
        self.refused_writes = RefusedWrites("the lanes router (messages wait in the intake and the lanes)", log)

    def run(self) -> None:
        log.info("lanes router %s started (ready depth %s, %s served salons)", self.id, self.depth, self.served)
        if not self.served:
            log.warning("no served salons (yclients.company_ids): every message takes the fleet's lane, no fair turns")
        leading, renew_at, scan_at = False, 0.0, 0.0
        unreachable = 0  # Redis errors in a row that are not refusals (a restart, a lost connection)
        while not self.stopping.is_set():
            self.taken.clear()  # a take from now on wakes the wait below at once
            try:
                if time.monotonic() >= renew_at:  # stay alive (the orphan scan leaves our list be), hold the lease
                    self.client.set(ALIVE + self.id, "1", px=self.ttl_ms)
                    self.client.sadd(INFLIGHT_KEYS, self.inflight)
                    self.refused_writes.accepted()  # two writes went through: an episode of refusals is over
                    leading, renew_at = self._leading(), time.monotonic() + HOUSEKEEPING_SECONDS
                    self._look_at_intake = True  # whatever a step missed is routed within the housekeeping period
                if time.monotonic() >= scan_at:
                    requeue_orphans(self.client, self.id)
                    scan_at = time.monotonic() + self.orphan_scan_seconds
                # The intake is read when the last dispatch saw messages there, after the wait on the intake (it
                # moved a message into this router's in-flight list), after a failed step and at housekeeping.
                routed = self.lanes.route(self.inflight, self.batch) if leading and self._look_at_intake else 0
                moved, backlog = self.lanes.dispatch(self.depth)
                self._look_at_intake = self.lanes.intake_waiting or routed >= self.batch
                # Step again at once only while there is more to do: the intake gave a full batch, or the lanes
                # hold work the ready list has room for. A full ready list waits for a take (`ready_taken`).
                if routed < self.batch and not (backlog and moved and not self.lanes.ready_full):
                    if backlog:
                        self.taken.wait(BACKLOG_POLL_SECONDS)
                    elif leading:
                        self.lanes.wait_for_intake(self.inflight, IDLE_BLOCK_SECONDS)
                        self._look_at_intake = True
                    else:
                        self.taken.wait(FOLLOWER_POLL_SECONDS)
            except redis.RedisError as exc:
                self._look_at_intake = True
                cause = refusal_cause(exc)
                if cause is not None:  # the next step starts with the renewal: its writes end the episode
                    renew_at = 0.0
                    self.stopping.wait(self.refused_writes.refused(cause))
                    continue
                if not unreachable:
                    log.warning("lanes router paused: %s; retrying every second", type(exc).__name__)
                unreachable += 1
                self.stopping.wait(1.0)
                continue
            except Exception:  # the router must outlive anything; its in-flight list waits for the next step
                self._look_at_intake = True
                log.exception("lanes router step failed; retrying in a second")
                self.stopping.wait(1.0)
                continue
            if unreachable:
                log.warning("lanes router resumed after %s failed steps", unreachable)
                unreachable = 0
        self.client.close()

    def took(self, remaining: int) -> None:
        """Wake the router when a take from the ready list left it empty or with room for `REFILL_ROOM`: a step
        then deals out two messages, where a step on every take cost the main process one dispatch script a
        message (a tenth of its CPU at saturation). The list never runs dry meanwhile: the take that wakes the
        router leaves `ready_depth - REFILL_ROOM` behind (at the default depth of 4, two for two children)."""
        if remaining <= 0 or self.depth - remaining >= min(REFILL_ROOM, self.depth):
            self.taken.set()

    def _leading(self) -> bool:
        """Hold (or take) the routing lease (renewed every half second); a router that died loses it within two
        seconds, and the others take it over."""
        if self.client.set(LEASE_KEY, self.id, nx=True, px=2000):
            return True
        if self.client.get(LEASE_KEY) == self.id.encode():
            self.client.pexpire(LEASE_KEY, 2000)
            return True
        return False

    def stop(self) -> None:
        self.stopping.set()
        self.taken.set()
        self.join(timeout=5)


_router: Router | None = None


def start_router(settings: Settings) -> None:
    global _router
    if _router is None:
        _router = Router(settings)
        _router.start()


def ready_taken(remaining: int) -> None:
    """The consumer of this process took a message from the ready list and left `remaining` there: its router
    tops the list up now instead of at its next look, once the list has room for two or is empty (other hosts'
    routers look on their own consumers' takes, or within `BACKLOG_POLL_SECONDS`). Nothing happens in a
    process without a router."""
    if _router is not None:
        _router.took(remaining)


def stop_router() -> None:
    global _router
    if _router is not None:
        _router.stop()
        _router = None
