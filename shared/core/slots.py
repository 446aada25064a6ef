"""A counting semaphore in Redis whose slots are leases, with a first-come line for those who wait, and a named
hold that its holder can take again.

Why leases: a holder that dies (SIGKILL, the hard time limit, the OOM killer) runs no `finally`, so a plain
counter would keep its slot forever. Each slot is a member of a sorted set scored by the moment its lease runs
out (on Redis' clock, so hosts' clocks do not matter); whoever asks next drops the expired ones first. A living
holder renews its lease from a thread (`KeptSlot`), so the lease can be short (a dead holder's slot is free
again within one lease) while the work it guards runs for half an hour.

Why a line: a caller that finds no slot free comes back later (it is not blocked, it asks again). Without a
line, one that keeps coming back could lose every time to a newcomer that asked just as a slot freed; in the
line, a slot goes to the longest waiting caller first, so each one runs after at most the holders and the
callers ahead of it. A place in the line is kept while its caller keeps asking, and dropped once it has not
asked for `place_seconds` (its caller was lost): a lost caller holds the line up that long at most.

Every step is one Lua script: nothing is counted twice by callers racing on several hosts.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis

from shared.core.refused_writes import RefusedWrites, refusal_cause

log = logging.getLogger(__name__)

# Shared head of every script: Redis' own clock in ms; expired holders and waiters who stopped asking dropped.
# KEYS[1]: holders (member -> lease end, ms), KEYS[2]: the line (member -> when it first asked), KEYS[3]: the
# line's places (member -> when its place lapses).
_TIDY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, member in ipairs(lapsed) do redis.call('ZREM', KEYS[2], member) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local function expire_with_last(key, scores)
  local last = redis.call('ZRANGE', scores, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', key, math.ceil(tonumber(last[2]))) end
end
"""

# ARGV: holder, limit, lease ms, place ms. Returns {1, 0} when the holder has a slot (again, if it held one),
# else {0, callers ahead of it in the line} with its place kept (first asking time unchanged).
ACQUIRE = (
    _TIDY
    + """
local holder, limit = ARGV[1], tonumber(ARGV[2])
local lease, place = tonumber(ARGV[3]), tonumber(ARGV[4])
local ahead = redis.call('ZRANK', KEYS[2], holder) or redis.call('ZCARD', KEYS[2])
local held = redis.call('ZSCORE', KEYS[1], holder)
if held or ahead < limit - redis.call('ZCARD', KEYS[1]) then
  redis.call('ZADD', KEYS[1], now + lease, holder)
  redis.call('ZREM', KEYS[2], holder)
  redis.call('ZREM', KEYS[3], holder)
  expire_with_last(KEYS[1], KEYS[1])
  return {1, 0}
end
redis.call('ZADD', KEYS[2], 'NX', now, holder)
redis.call('ZADD', KEYS[3], now + place, holder)
expire_with_last(KEYS[2], KEYS[3])
expire_with_last(KEYS[3], KEYS[3])
return {0, ahead}
"""
)

# ARGV: holder, lease ms. 1 when the holder still had its slot and its lease now runs `lease` from now.
RENEW = (
    _TIDY
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
expire_with_last(KEYS[1], KEYS[1])
return 1
"""
)

# ARGV: holder. Its slot and its place in the line, whichever it has, are given up.
RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# A named hold its holder can take again (a deferred task coming back): set when free or already this holder's,
# for ARGV[2] ms. 1 when held.
HOLD = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Let go of a named hold if it is still this holder's.
LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Admission:
    """The answer to a request for a slot: granted, or how many callers wait ahead in the line."""

    granted: bool
    ahead: int = 0


class LeasedSlots:
    """At most `limit` holders at a time under `name`; each holder is a string the caller keeps (a task id)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.keys = [f"fleet:slots:{name}", f"fleet:slots:{name}:line", f"fleet:slots:{name}:places"]
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    def acquire(self, holder: str, limit: int, lease: float, place_seconds: float) -> Admission:
        """A slot for `holder` if one is free and no one waits ahead of it (a holder asking again keeps its
        slot); otherwise its place in the line, kept for `place_seconds` unless it asks again."""
        granted, ahead = self._acquire(
            keys=self.keys, args=[holder, limit, _ms(lease), _ms(place_seconds)], client=self.client
        )
        return Admission(bool(granted), int(ahead))

    def renew(self, holder: str, lease: float) -> bool:
        """Extend the holder's lease to `lease` from now; False when it had already lapsed (the slot is gone)."""
        return bool(self._renew(keys=self.keys, args=[holder, _ms(lease)], client=self.client))

    def release(self, holder: str) -> None:
        """Give up the holder's slot and its place in the line (either may already be gone)."""
        self._release(keys=self.keys, args=[holder], client=self.client)

    def holders(self) -> list[str]:
        """Who holds a slot now (unexpired leases), for reports and tests."""
        now = self.client.time()
        now_ms = now[0] * 1000 + now[1] // 1000
        return [m.decode() for m in self.client.zrangebyscore(self.keys[0], f"({now_ms}", "+inf")]

    def waiting(self) -> list[str]:
        """The line, first come first (places that lapsed included until the next request tidies them)."""
        return [m.decode() for m in self.client.zrange(self.keys[1], 0, -1)]

    def keep(self, holder: str, lease: float) -> KeptSlot:
        """Renew a granted slot's lease from a thread until `KeptSlot.release`."""
        return KeptSlot(self, holder, lease)


class KeptSlot:
    """A granted slot renewed every third of its lease by a daemon thread: while the process lives the slot is
    kept however long the work runs; once it dies, the slot is free again within one lease."""

    def __init__(self, slots: LeasedSlots, holder: str, lease: float) -> None:
        self.slots, self.holder, self.lease = slots, holder, lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"slot-lease:{slots.name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        """Every third of the lease, whatever Redis says: a failed renewal is logged once until one goes through
        (a refused write with its cause), and the next try keeps the same pace (waiting longer would let the
        lease lapse once Redis is back)."""
        lost, failing = False, False
        refused = RefusedWrites(f"the lease renewal of the {self.slots.name} slot of {self.holder}", log)
        while not self._stop.wait(self.lease / 3):
            try:
                held = self.slots.renew(self.holder, self.lease)
            except redis.RedisError as exc:  # Redis away for a moment: the lease covers two more tries
                cause = refusal_cause(exc)
                if cause is not None:
                    refused.refused(cause)
                elif not failing:
                    log.warning(
                        "could not renew the %s slot of %s: %s", self.slots.name, self.holder, type(exc).__name__
                    )
                failing = True
                continue
            refused.accepted()
            failing = False
            if not held and not lost:
                lost = True  # the work goes on; someone else may take the slot meanwhile
                log.warning("the %s slot of %s lapsed before it was renewed", self.slots.name, self.holder)

    def release(self) -> None:
        """Stop renewing and give the slot back."""
        self._stop.set()
        self._thread.join(5)
        self.slots.release(self.holder)


def hold(client: redis.Redis, key: str, holder: str, seconds: float) -> bool:
    """Take the named hold for `seconds`, or keep it if `holder` has it already; False when another holder has it."""
    return bool(client.eval(HOLD, 1, key, holder, _ms(seconds)))


def let_go(client: redis.Redis, key: str, holder: str) -> None:
    """Release the named hold if it is still `holder`'s (it may have lapsed and been taken by another)."""
    client.eval(LET_GO, 1, key, holder)


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)
