"""One registry for what a process makes once and must not share across fork: API clients, Redis clients,
the assistant. Made on first use (so after fork), keyed by name and pid, closed together at child shutdown."""

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


def resource(name: str, make: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
    """This process's object of that name, made by `make` the first time (an inherited one is never reused)."""
    key = (os.getpid(), name)
    with _lock:
        if key not in _made:
            _made[key] = (make(), close)
        return _made[key][0]


def close_all() -> None:
    """Close this process's resources (worker child shutdown, end of a CLI command); errors are logged only."""
    pid = os.getpid()
    with _lock:
        mine = [(key, entry) for key, entry in _made.items() if key[0] == pid]
        for key, _ in mine:
            del _made[key]
    for (_, name), (value, close) in mine:
        if close is None:
            continue
        try:
            close(value)
        except Exception:  # closing at exit must not hide the reason the process is exiting
            log.exception("closing %s failed", name)
