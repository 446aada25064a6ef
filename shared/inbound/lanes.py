"""Fair turns across salons: one salon's flood never holds up another salon's clients.

Producers publish every inbound task to the `inbound` list (the intake), first in, first out, as before.
A router (`workers/lanes.py`, in each inbound worker's main process; one routes at a time) moves what arrives
into one lane per salon (`fleet:lane:<company>`), keeping each lane's order, and every router keeps the
`inbound.ready` list, the one the inbound workers consume, filled to a few messages by taking one message
from each salon with a backlog in turn. A quiet salon's message therefore waits behind at most the few
messages already in `inbound.ready` and one message of each other busy salon, however long their backlog
is; a salon alone gets the fleet's whole pace.

Every step is one Lua script, so a router killed half-way loses nothing: what it took from the intake sits
in its own in-flight list (`fleet:inflight:inbound:router-…`), which the broker's orphan scan returns to the
intake once the router's alive key expires. A message whose salon cannot be read (not JSON, an unexpected
task) goes to the fleet's own lane and on to the workers, which keep or refuse it as before.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

INTAKE = "inbound"
READY = "inbound.ready"
LANE = "fleet:lane:"
RING = "fleet:lanes"  # companies with a backlog, in turn order (each once)
RING_SET = "fleet:lanes:members"
FLEET_LANE = "fleet"  # tasks of no salon (sweeps, reminders, pings) and messages nobody could read

# Take up to ARGV[1] messages from the intake's old end into this router's in-flight list; return that list.
TAKE = """
local taken = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if taken then
  for _, message in ipairs(taken) do redis.call('LPUSH', KEYS[2], message) end
end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""

# Place the in-flight messages (ARGV: lane, message, lane, message ..., oldest first) in their lanes.
PLACE = """
for i = 1, #ARGV, 2 do
  local lane = ARGV[i]
  redis.call('LPUSH', KEYS[4] .. lane, ARGV[i + 1])
  if redis.call('SADD', KEYS[3], lane) == 1 then redis.call('LPUSH', KEYS[2], lane) end
end
redis.call('DEL', KEYS[1])
return #ARGV / 2
"""

# Fill the ready list to ARGV[1] messages, one message of each lane in turn; empty lanes leave the ring.
DISPATCH = """
local depth = tonumber(ARGV[1])
local moved = 0
while redis.call('LLEN', KEYS[1]) < depth do
  local lane = redis.call('RPOPLPUSH', KEYS[2], KEYS[2])
  if not lane then break end
  local message = redis.call('RPOP', KEYS[4] .. lane)
  if message then
    redis.call('LPUSH', KEYS[1], message)
    moved = moved + 1
  end
  if redis.call('LLEN', KEYS[4] .. lane) == 0 then
    redis.call('LREM', KEYS[2], 0, lane)
    redis.call('SREM', KEYS[3], lane)
  end
end
return {moved, redis.call('LLEN', KEYS[2])}
"""


RECEIVE_TASK = "workers.inbound.receive_message"
DRAIN_TASK = "workers.inbound.drain_chat"


def lane_of(raw: bytes | str) -> str:
    """The salon a queued Celery message belongs to: a received message's `company_id`, a chat drain's first
    argument; every other task (deliveries, sweeps, reminders) and anything unreadable: the fleet's lane."""
    try:
        envelope = json.loads(raw)
        task = envelope.get("headers", {}).get("task")
        if task not in (RECEIVE_TASK, DRAIN_TASK):
            return FLEET_LANE
        body: Any = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        if task == RECEIVE_TASK:
            payload = args[0] if args else kwargs.get("payload")
            company = payload.get("company_id") if isinstance(payload, dict) else None
        else:
            company = args[0] if args else kwargs.get("company_id")
    except Exception:  # noqa: BLE001  (whatever a producer sent, even JSON nested past the recursion limit)
        return FLEET_LANE
    if isinstance(company, bool) or not isinstance(company, int | str):
        return FLEET_LANE
    text = str(company).strip()
    return text if text.isdigit() and len(text) <= 19 else FLEET_LANE


class Lanes:
    """The Lua steps, bound to one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._take = client.register_script(TAKE)
        self._place = client.register_script(PLACE)
        self._dispatch = client.register_script(DISPATCH)

    def route(self, inflight: str, batch: int) -> int:
        """Move up to `batch` messages from the intake into their lanes (and any left in `inflight` by an
        earlier attempt); returns how many were placed."""
        held = self._take(keys=[INTAKE, inflight], args=[batch])
        if not held:
            return 0
        pairs: list[bytes | str] = []
        for raw in reversed(held):  # LRANGE lists newest first; lanes are filled oldest first
            pairs += [lane_of(raw), raw]
        return int(self._place(keys=[inflight, RING, RING_SET, LANE], args=pairs))

    def dispatch(self, depth: int) -> tuple[int, int]:
        """Top the ready list up to `depth`, in turns across salons; returns (messages moved, salons still
        holding a backlog)."""
        moved, waiting = self._dispatch(keys=[READY, RING, RING_SET, LANE], args=[depth])
        return int(moved), int(waiting)

    def wait_for_intake(self, inflight: str, seconds: float) -> bool:
        """Block until a message reaches the intake (moved into `inflight`, routed by the next `route`), or
        `seconds` pass: an idle router wakes the moment work arrives instead of polling."""
        return self.client.blmove(INTAKE, inflight, seconds, "RIGHT", "LEFT") is not None


def backlog(client: redis.Redis) -> dict[str, int]:
    """Messages waiting in each salon's lane (the fleet's own lane under "fleet"), for health and metrics."""
    lanes = [lane.decode() if isinstance(lane, bytes) else str(lane) for lane in client.smembers(RING_SET)]
    if not lanes:
        return {}
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.llen(LANE + lane)
    return {lane: int(depth) for lane, depth in zip(lanes, pipe.execute(), strict=True) if depth}
