"""The router of the inbound worker's main process: deals the intake out to the salons' lanes and keeps the
workers' ready list filled in turns (shared/inbound/lanes.py says why and how).

Every inbound worker runs one; they share the dealing (atomic Lua steps) and take turns at routing, so only
one routes at a time (a Redis lease): a single router keeps each salon's messages in the order they came.
A Redis error pauses the router for a second and never stops the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import redis

from shared.core.settings import Settings
from shared.inbound.lanes import INTAKE, Lanes
from workers.broker import ALIVE, INFLIGHT_KEYS, inflight_key

log = logging.getLogger(__name__)

LEASE_KEY = "fleet:lanes:router"
IDLE_SECONDS = 0.02


class Router(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="fleet-lanes-router", daemon=True)
        self.id = f"router-{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.inflight = inflight_key(INTAKE, self.id)
        self.client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=5)
        self.lanes = Lanes(self.client)
        self.ttl_ms = int(settings.broker_inflight_ttl_seconds * 1000)
        self.depth = settings.inbound.ready_depth
        self.batch = settings.inbound.route_batch
        self.stopping = threading.Event()

    def run(self) -> None:
        log.info("lanes router %s started (ready depth %s)", self.id, self.depth)
        beats = 0
        while not self.stopping.is_set():
            try:
                if beats % 50 == 0:  # about every second: stay alive, so the orphan scan leaves our list be
                    self.client.set(ALIVE + self.id, "1", px=self.ttl_ms)
                    self.client.sadd(INFLIGHT_KEYS, self.inflight)
                beats += 1
                routed = self.lanes.route(self.inflight, self.batch) if self._leading() else 0
                moved = self.lanes.dispatch(self.depth)
            except redis.RedisError as exc:
                log.warning("lanes router paused: %s", type(exc).__name__)
                self.stopping.wait(1.0)
                continue
            except Exception:  # the router must outlive anything; its in-flight list waits for the next step
                log.exception("lanes router step failed; retrying in a second")
                self.stopping.wait(1.0)
                continue
            if not routed and not moved:
                self.stopping.wait(IDLE_SECONDS)
        self.client.close()

    def _leading(self) -> bool:
        """Hold (or take) the routing lease; a router that died loses it within two seconds."""
        if self.client.set(LEASE_KEY, self.id, nx=True, px=2000):
            return True
        if self.client.get(LEASE_KEY) == self.id.encode():
            self.client.pexpire(LEASE_KEY, 2000)
            return True
        return False

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


_router: Router | None = None


def start_router(settings: Settings) -> None:
    global _router
    if _router is None:
        _router = Router(settings)
        _router.start()


def stop_router() -> None:
    global _router
    if _router is not None:
        _router.stop()
        _router = None
