"""Redis refusing writes is a state of the server, not a fault of the command: every loop of the fleet waits
it out, says so once, and goes on by itself when writes are accepted again.

Redis refuses writes, and answers every other command, when it is over its `maxmemory` under `noeviction`
(`OOM`, the policy `fleet check` requires), when it is a read-only replica (`READONLY`), and when it cannot
persist (`MISCONF`: a failed RDB save under `stop-writes-on-bgsave-error`, or a failed append-only write); a
write that was waiting (BLMOVE) when a master became a replica is ended with `UNBLOCKED`.
redis-py raises each as a `ResponseError`, which kombu and Celery count as a channel error: raised in a
worker's event loop it ended the worker ("Unrecoverable error: OutOfMemoryError"). `refusal_code` recognises
them (by class, or by the code that opens the server's message, also inside a pipeline's or a script's error);
`RefusedWrites` is one loop's episode of them: logged once when it starts and once when it ends, with a wait
that grows to a few seconds between tries.
"""

from __future__ import annotations

import logging
import re
import time

import redis

from shared.core.failure import backoff_delay

# What the fleet says about each refusal, in the words operators and producers read.
CAUSES = {
    "OOM": "Redis is out of memory (maxmemory reached, noeviction)",
    "READONLY": "Redis is a read-only replica",
    "MISCONF": "Redis cannot persist to disk (MISCONF: a failed save stops writes)",
    "UNBLOCKED": "Redis stopped a waiting write (UNBLOCKED: it became a replica, or a client unblocked it)",
}
# The server's error code at the start of its message, or after "caused error: " (a pipeline's annotation),
# "-" (a script's error on Redis 6.2) or a space.
_CODE = re.compile(r"(?:^|caused error: |-)(OOM|READONLY|MISCONF|UNBLOCKED) ")

FIRST_WAIT_SECONDS = 0.25
LONGEST_WAIT_SECONDS = 5.0


def refusal_code(exc: BaseException) -> str | None:
    """`OOM`, `READONLY`, `MISCONF` or `UNBLOCKED` when `exc` is Redis refusing a write, else None: any other
    error is the caller's to handle as before."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "OOM"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "READONLY"
    if not isinstance(exc, redis.exceptions.ResponseError):
        return None
    found = _CODE.search(str(exc))
    return found.group(1) if found else None


def refusal_cause(exc: BaseException) -> str | None:
    """The cause when `exc` is Redis refusing a write (`CAUSES`' text), else None."""
    code = refusal_code(exc)
    return None if code is None else CAUSES[code]


class RefusedWrites:
    """One loop's episode of refused writes. `refused` logs the first refusal of an episode (a warning naming
    the cause) and only counts the rest, and returns how long to wait before the next try: 0.25 s, doubling,
    at most 5 s. `accepted` ends the episode, with one more line. Owned by one loop (one thread)."""

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.log = logger
        self.cause: str | None = None
        self.count = 0
        self.since = 0.0

    @property
    def active(self) -> bool:
        return self.cause is not None

    def refused(self, cause: str) -> float:
        """A refused write (its cause from `refusal_cause`): the seconds to wait before trying again."""
        if self.cause is None:
            self.cause, self.since = cause, time.monotonic()
            self.log.warning(
                "Redis refuses writes: %s; %s waits and tries again by itself (said again when writes are accepted)",
                cause,
                self.what,
            )
        self.count += 1
        return backoff_delay(self.count, FIRST_WAIT_SECONDS, LONGEST_WAIT_SECONDS)

    def accepted(self) -> None:
        """A write went through: the episode, if any, is over."""
        if self.cause is None:
            return
        self.log.warning(
            "Redis accepts writes again: %s resumed after %.1f s (%s refused tries)",
            self.what,
            time.monotonic() - self.since,
            self.count,
        )
        self.cause, self.count = None, 0
