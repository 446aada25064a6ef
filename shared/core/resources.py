"""One registry for what a process makes once and must not share across fork: the connection pool, API and
Redis clients, query metrics, the assistant. Made on first use (so after fork), keyed by name and pid, closed
together at child shutdown.

It imports nothing of the fleet's, so every layer, observability included, may keep its objects here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_lock = threading.RLock()  # a factory may itself ask for another resource
_made: dict[tuple[int, str], tuple[Any, Callable[[Any], None] | None]] = {}


_pid = os.getpid()


def _forked() -> None:
    """In a new child: a lock another thread of the parent held at fork would never be released there, and the
    process id the registry keys by is the child's own from now on."""
    global _lock, _pid
    _lock = threading.RLock()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def process_id() -> int:
    """This process's id, kept from the last fork: `os.getpid()` is a system call each time (glibc stopped
    caching it), and the registry and every metric sample ask for it, dozens of times a message."""
    return _pid


def resource(name: str, make: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
    """This process's object of that name, made by `make` the first time (an inherited one is never reused)."""
    key = (_pid, name)
    entry = _made.get(key)  # the common case, once made: no lock on a path every statement takes
    if entry is not None:
        return entry[0]
    with _lock:
        if key not in _made:
            _made[key] = (make(), close)
        return _made[key][0]


def made(name: str) -> Any | None:
    """This process's object of that name if it was made, without making it (None otherwise)."""
    entry = _made.get((_pid, name))
    return None if entry is None else entry[0]


def take(name: str) -> Any | None:
    """Remove this process's object of that name from the registry and hand it over for the caller to close;
    the next `resource` call makes a new one."""
    with _lock:
        entry = _made.pop((_pid, name), None)
    return None if entry is None else entry[0]


def close_all() -> None:
    """Close this process's resources, newest first (a later one may use an earlier one: a client, the pool),
    at worker child shutdown or the end of a CLI command; errors are logged only."""
    pid = _pid
    with _lock:
        mine = [(key, entry) for key, entry in _made.items() if key[0] == pid]
        for key, _ in mine:
            del _made[key]
    for (_, name), (value, close) in reversed(mine):
        if close is None:
            continue
        try:
            close(value)
        except Exception:  # closing at exit must not hide the reason the process is exiting
            log.exception("closing %s failed", name)
