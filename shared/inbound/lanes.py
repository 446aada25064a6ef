"""Fair turns across salons: one salon's flood never holds up another salon's clients.

Producers publish every inbound task to the `inbound` list (the intake), first in, first out, as before.
A router (`workers/lanes.py`, in each inbound worker's main process; one routes at a time) moves what arrives
into one lane per served salon (`fleet:lane:<company>`), keeping each lane's order, and every router keeps the
`inbound.ready` list, the one the inbound workers consume, filled to a few messages by taking one message
from each salon with a backlog in turn. A quiet salon's message therefore waits behind at most the few
messages already in `inbound.ready` and one message of each other busy salon, however long their backlog
is; a salon alone gets the fleet's whole pace.

Every step is one Lua script, so a router killed half-way loses nothing: what it took from the intake sits
in its own in-flight list (`fleet:inflight:inbound:router-…`), which the routers' orphan scan
(`workers/lanes.py`) returns to the intake once the router's alive key expires. A message whose salon cannot
be read (not JSON, an unexpected task), whose salon is not served (`yclients.company_ids`), or which is larger
than `broker_max_message_bytes` goes to the fleet's own lane and on to the workers, which keep or refuse it
as before. Whatever a producer pushes, the router's cost stays bounded:

- an oversized entry is measured inside Lua and never reaches the router's process (not even the idle
  router's blocking wait receives it), so it is never decoded;
- the lanes, and the metric labels read from them, are at most the served salons and the fleet's lane;
- a step reads at most `ROUTE_BYTES` of messages, and an emptied lane leaves the turn ring in O(1) (it has
  just been rotated to the ring's head), never by a scan of the ring.

Each script names every key it touches in KEYS (the lanes too: the caller passes the lanes a step may
reach), none is built inside Lua.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import redis

from shared.core.kombu_contract import Envelope, queue_key
from shared.core.settings import Settings
from shared.core.topology import Queue, TaskName

INTAKE = Queue.INBOUND.value
READY = Queue.INBOUND_READY.value
LANE = "fleet:lane:"
RING = "fleet:lanes"  # companies with a backlog, in turn order (each once): next at the tail, last at the head
RING_SET = "fleet:lanes:members"
FLEET_LANE = "fleet"  # tasks of no salon (sweeps, reminders, pings) and messages nobody could read
DISPATCH_ATTEMPTS = 3  # a step that met a lane it was not given is run again at once, with that lane
ROUTE_BYTES = 4 * 1024 * 1024  # message text one route step hands to the router at most (one message always)

# Move intake entries (oldest first) into this router's in-flight list until it holds ARGV[1]; then describe
# the in-flight list oldest first, without handing over more than ARGV[3] bytes: an entry up to ARGV[2] bytes
# as itself, a larger one as its length only (the router never decodes it). Reply: {the in-flight list's
# length, the entries described}; the described ones are the oldest, the rest wait for the next step.
TAKE = """
local batch, limit, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for _ = redis.call('LLEN', KEYS[2]) + 1, batch do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') then break end
end
local held, size, bytes = {}, redis.call('LLEN', KEYS[2]), 0
for i = 1, math.min(size, batch) do
  local message = redis.call('LINDEX', KEYS[2], -i)
  if #message > limit then
    held[i] = #message
  else
    if bytes + #message > budget then break end
    bytes = bytes + #message
    held[i] = message
  end
end
return {size, held}
"""

# Move the oldest in-flight messages to their lanes, oldest first. KEYS: the in-flight list, the ring, its
# member set, then the lanes; ARGV[1]: the in-flight list's length TAKE saw (another length: an orphan scan
# took the list meanwhile, nothing is placed, -1); then per message: its lane's position in KEYS, the lane
# (the company, as the ring holds it). The messages move inside Redis: none is sent back by the router.
PLACE = """
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return -1 end
for i = 2, #ARGV, 2 do
  local lane = ARGV[i + 1]
  redis.call('LMOVE', KEYS[1], KEYS[tonumber(ARGV[i])], 'RIGHT', 'LEFT')
  if redis.call('SADD', KEYS[3], lane) == 1 then redis.call('LPUSH', KEYS[2], lane) end
end
return (#ARGV - 1) / 2
"""

# Fill the ready list to ARGV[1] messages, one message of each lane in turn; empty lanes leave the ring.
# KEYS: the ready list, the ring, its member set, the intake, then the lanes next in turn, named in ARGV[2..]
# in the same order. A lane whose turn comes but which was not given ends the step (its turn kept); the reply
# says so, and lists the lanes next in turn for the following step: {moved, lanes in the ring, unnamed lane met,
# next, the ready list's length, the intake's length} (the intake is only measured: routing it is TAKE's).
# Every command is O(1) but the last LRANGE, O(depth) from the tail: the ring's length never counts.
DISPATCH = """
local depth = tonumber(ARGV[1])
local key_of = {}
for i = 2, #ARGV do key_of[ARGV[i]] = KEYS[i + 3] end
local moved, unnamed = 0, 0
while redis.call('LLEN', KEYS[1]) < depth do
  local lane = redis.call('LINDEX', KEYS[2], -1)
  if not lane then break end
  local key = key_of[lane]
  if not key then
    unnamed = 1
    break
  end
  redis.call('LMOVE', KEYS[2], KEYS[2], 'RIGHT', 'LEFT')
  if redis.call('LMOVE', key, KEYS[1], 'RIGHT', 'LEFT') then moved = moved + 1 end
  if redis.call('LLEN', key) == 0 then
    redis.call('LPOP', KEYS[2])
    redis.call('SREM', KEYS[3], lane)
  end
end
return {moved, redis.call('LLEN', KEYS[2]), unnamed, redis.call('LRANGE', KEYS[2], -depth, -1),
        redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[4])}
"""


RECEIVE_TASK = TaskName.RECEIVE_MESSAGE
DRAIN_TASK = TaskName.DRAIN_CHAT


def lane_of(raw: bytes | str, served: Collection[str]) -> str:
    """The lane of a queued Celery message: a received message's `company_id`, a chat drain's first argument,
    when that salon is `served` (company ids as text); every other task (deliveries, sweeps, reminders), an
    unknown salon and anything unreadable: the fleet's lane. The caller keeps oversized entries away."""
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
    if text.isdigit() and len(text) <= 19:
        text = str(int(text))  # "077" is company 77 to the workers: the same lane, the chat's order kept
    return text if text in served else FLEET_LANE


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Lanes:
    """The Lua steps, bound to one Redis client, the salons given lanes and the size the router reads."""

    def __init__(self, client: redis.Redis, *, served: Iterable[int | str], max_bytes: int) -> None:
        self.client = client
        self.served = frozenset(str(company) for company in served)
        self.max_bytes = max_bytes
        self.route_bytes = max(ROUTE_BYTES, max_bytes)
        self._take = client.register_script(TAKE)
        self._place = client.register_script(PLACE)
        self._dispatch = client.register_script(DISPATCH)
        self._next_in_turn: list[str] = []  # the ring's next lanes, as the last dispatch step saw them
        self.ready_full = False  # the last dispatch left the ready list at its depth: nothing to do until a take
        self.intake_waiting = True  # the last dispatch saw messages in the intake (or none has run yet)

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Settings) -> Lanes:
        """Lanes for the companies the fleet serves; entries over the broker's size limit are not read."""
        return cls(client, served=settings.yclients.company_ids, max_bytes=settings.broker_max_message_bytes)

    def route(self, inflight: str, batch: int) -> int:
        """Move up to `batch` messages from the intake into their lanes (and any left in `inflight` by an
        earlier attempt); returns how many were placed."""
        size, held = self._take(keys=[queue_key(INTAKE), inflight], args=[batch, self.max_bytes, self.route_bytes])
        if not held:
            return 0
        keys: list[str] = [inflight, RING, RING_SET]
        position: dict[str, int] = {}
        pairs: list[int | str] = []
        for entry in held:  # oldest first; an int is an oversized entry's length: the workers refuse it
            lane = FLEET_LANE if isinstance(entry, int) else lane_of(entry, self.served)
            if lane not in position:
                keys.append(LANE + lane)
                position[lane] = len(keys)  # Lua counts KEYS from 1
            pairs += [position[lane], lane]
        return max(int(self._place(keys=keys, args=[size, *pairs])), 0)

    def dispatch(self, depth: int) -> tuple[int, int]:
        """Top the ready list up to `depth`, in turns across salons; returns (messages moved, salons still
        holding a backlog)."""
        moved = waiting = 0
        for _ in range(DISPATCH_ATTEMPTS):
            lanes = self._next_in_turn
            keys = [queue_key(READY), RING, RING_SET, queue_key(INTAKE), *(LANE + lane for lane in lanes)]
            reply = self._dispatch(keys=keys, args=[depth, *lanes])
            step_moved, waiting, unnamed, upcoming, ready, intake = reply
            moved += int(step_moved)
            self._next_in_turn = [_text(lane) for lane in upcoming]
            self.ready_full, self.intake_waiting = int(ready) >= depth, int(intake) > 0
            if not int(unnamed):
                break
        return moved, int(waiting)

    def wait_for_intake(self, inflight: str, seconds: float) -> bool:
        """Block until a message reaches the intake (moved into `inflight`, routed by the next `route`), or
        `seconds` pass: an idle router wakes the moment work arrives instead of polling. BLMOVE answers with
        the entry itself, which may be any size: `CLIENT REPLY SKIP` drops that answer in Redis, and the
        in-flight list's length answers instead (true: something waits there)."""
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(
                connection.pack_commands(
                    [
                        ("CLIENT", "REPLY", "SKIP"),
                        ("BLMOVE", queue_key(INTAKE), inflight, "RIGHT", "LEFT", seconds),
                        ("LLEN", inflight),
                    ]
                )
            )
            return int(connection.read_response()) > 0
        except BaseException:
            connection.disconnect()  # an answer may still be on its way: never reuse this connection
            raise
        finally:
            pool.release(connection)


def backlog(client: redis.Redis) -> dict[str, int]:
    """Messages waiting in each salon's lane (the fleet's own lane under "fleet"), for health and metrics:
    bounded like the lanes themselves, by the served salons."""
    lanes = [_text(lane) for lane in client.smembers(RING_SET)]
    if not lanes:
        return {}
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.llen(LANE + lane)
    return {lane: int(depth) for lane, depth in zip(lanes, pipe.execute(), strict=True) if depth}
