"""Fair turns across salons: one salon's flood never holds up another salon's clients.

Producers publish every inbound task to the `inbound` list (the intake), first in, first out, as before.
A router (`workers/lanes.py`, in each inbound worker's main process; one routes at a time) moves what arrives
into one lane per salon (`fleet:lane:<company>`), keeping each lane's order, and every router keeps the
`inbound.ready` list, the one the inbound workers consume, filled to a few messages by taking one message
from each salon with a backlog in turn. A quiet salon's message therefore waits behind at most the few
messages already in `inbound.ready` and one message of each other busy salon, however long their backlog
is; a salon alone gets the fleet's whole pace.

Every step is one Lua script, so a router killed half-way loses nothing: what it took from the intake sits
in its own in-flight list (`fleet:inflight:inbound:router-…`), which the routers' orphan scan
(`workers/lanes.py`) returns to the intake once the router's alive key expires. A message whose salon cannot
be read (not JSON, an unexpected task) goes to the fleet's own lane and on to the workers, which keep or
refuse it as before. Each script names every key it touches in KEYS (the lanes too: the caller passes the
lanes a step may reach), none is built inside Lua.
"""

from __future__ import annotations

import redis

from shared.core.kombu_contract import Envelope, queue_key
from shared.core.topology import Queue, TaskName

INTAKE = Queue.INBOUND.value
READY = Queue.INBOUND_READY.value
LANE = "fleet:lane:"
RING = "fleet:lanes"  # companies with a backlog, in turn order (each once)
RING_SET = "fleet:lanes:members"
FLEET_LANE = "fleet"  # tasks of no salon (sweeps, reminders, pings) and messages nobody could read
DISPATCH_ATTEMPTS = 3  # a step that met a lane it was not given is run again at once, with that lane

# Take up to ARGV[1] messages from the intake's old end into this router's in-flight list; return that list.
TAKE = """
local taken = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if taken then
  for _, message in ipairs(taken) do redis.call('LPUSH', KEYS[2], message) end
end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""

# Place the in-flight messages in their lanes and empty the in-flight list. KEYS: the in-flight list, the
# ring, its member set, then the lanes; ARGV, per message oldest first: its lane's position in KEYS, the lane
# (the company, as the ring holds it), the message.
PLACE = """
for i = 1, #ARGV, 3 do
  local lane = ARGV[i + 1]
  redis.call('LPUSH', KEYS[tonumber(ARGV[i])], ARGV[i + 2])
  if redis.call('SADD', KEYS[3], lane) == 1 then redis.call('LPUSH', KEYS[2], lane) end
end
redis.call('DEL', KEYS[1])
return #ARGV / 3
"""

# Fill the ready list to ARGV[1] messages, one message of each lane in turn; empty lanes leave the ring.
# KEYS: the ready list, the ring, its member set, then the lanes next in turn, named in ARGV[2..] in the same
# order. A lane whose turn comes but which was not given ends the step (its turn kept); the reply says so,
# and lists the lanes next in turn for the following step: {moved, lanes in the ring, unnamed lane met, next}.
DISPATCH = """
local depth = tonumber(ARGV[1])
local key_of = {}
for i = 2, #ARGV do key_of[ARGV[i]] = KEYS[i + 2] end
local moved, unnamed = 0, 0
while redis.call('LLEN', KEYS[1]) < depth do
  local lane = redis.call('LINDEX', KEYS[2], -1)
  if not lane then break end
  local key = key_of[lane]
  if not key then
    unnamed = 1
    break
  end
  redis.call('RPOPLPUSH', KEYS[2], KEYS[2])
  local message = redis.call('RPOP', key)
  if message then
    redis.call('LPUSH', KEYS[1], message)
    moved = moved + 1
  end
  if redis.call('LLEN', key) == 0 then
    redis.call('LREM', KEYS[2], 0, lane)
    redis.call('SREM', KEYS[3], lane)
  end
end
return {moved, redis.call('LLEN', KEYS[2]), unnamed, redis.call('LRANGE', KEYS[2], -depth, -1)}
"""


RECEIVE_TASK = TaskName.RECEIVE_MESSAGE
DRAIN_TASK = TaskName.DRAIN_CHAT


def lane_of(raw: bytes | str) -> str:
    """The salon a queued Celery message belongs to: a received message's `company_id`, a chat drain's first
    argument; every other task (deliveries, sweeps, reminders) and anything unreadable: the fleet's lane."""
    try:
        envelope = Envelope.parse(raw)
        task = envelope.task
        if task not in (RECEIVE_TASK, DRAIN_TASK):
            return FLEET_LANE
        args, kwargs = envelope.call()
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Lanes:
    """The Lua steps, bound to one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._take = client.register_script(TAKE)
        self._place = client.register_script(PLACE)
        self._dispatch = client.register_script(DISPATCH)
        self._next_in_turn: list[str] = []  # the ring's next lanes, as the last dispatch step saw them

    def route(self, inflight: str, batch: int) -> int:
        """Move up to `batch` messages from the intake into their lanes (and any left in `inflight` by an
        earlier attempt); returns how many were placed."""
        held = self._take(keys=[queue_key(INTAKE), inflight], args=[batch])
        if not held:
            return 0
        keys: list[str] = [inflight, RING, RING_SET]
        position: dict[str, int] = {}
        triples: list[bytes | str | int] = []
        for raw in reversed(held):  # LRANGE lists newest first; lanes are filled oldest first
            lane = lane_of(raw)
            if lane not in position:
                keys.append(LANE + lane)
                position[lane] = len(keys)  # Lua counts KEYS from 1
            triples += [position[lane], lane, raw]
        return int(self._place(keys=keys, args=triples))

    def dispatch(self, depth: int) -> tuple[int, int]:
        """Top the ready list up to `depth`, in turns across salons; returns (messages moved, salons still
        holding a backlog)."""
        moved = waiting = 0
        for _ in range(DISPATCH_ATTEMPTS):
            lanes = self._next_in_turn
            keys = [queue_key(READY), RING, RING_SET, *(LANE + lane for lane in lanes)]
            step_moved, waiting, unnamed, upcoming = self._dispatch(keys=keys, args=[depth, *lanes])
            moved += int(step_moved)
            self._next_in_turn = [_text(lane) for lane in upcoming]
            if not int(unnamed):
                break
        return moved, int(waiting)

    def wait_for_intake(self, inflight: str, seconds: float) -> bool:
        """Block until a message reaches the intake (moved into `inflight`, routed by the next `route`), or
        `seconds` pass: an idle router wakes the moment work arrives instead of polling."""
        return self.client.blmove(queue_key(INTAKE), inflight, seconds, "RIGHT", "LEFT") is not None


def backlog(client: redis.Redis) -> dict[str, int]:
    """Messages waiting in each salon's lane (the fleet's own lane under "fleet"), for health and metrics."""
    lanes = [_text(lane) for lane in client.smembers(RING_SET)]
    if not lanes:
        return {}
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.llen(LANE + lane)
    return {lane: int(depth) for lane, depth in zip(lanes, pipe.execute(), strict=True) if depth}
