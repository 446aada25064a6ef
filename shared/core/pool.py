"""The one psycopg connection pool of this process.

A pool must never cross a fork: sockets shared by parent and child corrupt each other's sessions. Worker
children open theirs in `worker_process_init`; beat and command-line tools open theirs on first use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from shared.core.resources import resource
from shared.core.settings import PoolSettings, Settings, get_settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_pool: ConnectionPool | None = None
_owner_pid: int | None = None


class IdleCheck:
    """Check a connection before use only when it was not borrowed lately: a round trip saved on busy borrows.

    A connection borrowed moments ago was working moments ago; one that sat unused may have been cut by a
    server restart or a firewall, and the check replaces it before a task sees the error. A connection that
    breaks inside the window fails its statement, which the tasks treat as transient and retry.
    """

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._borrowed_at: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        last = self._borrowed_at.get(conn)
        if last is None or now - last >= self.idle_seconds:
            ConnectionPool.check_connection(conn)
        self._borrowed_at[conn] = now


def connection_kwargs(settings: Settings, role: str, *, session: bool = False) -> dict[str, Any]:
    """How the fleet's connections are made; with FLEET_POOL__POOLER set, without what PgBouncer refuses or
    cannot carry from one transaction to the next."""
    ps: PoolSettings = settings.pool
    kwargs: dict[str, Any] = {
        # A statement outside `transaction()` commits on its own, in one round trip instead of three
        # (BEGIN, statement, COMMIT); `transaction()` still opens a real transaction block.
        "autocommit": True,
        "application_name": f"fleet-{role}",
        "connect_timeout": ps.connect_timeout,
    }
    if ps.pooler == "none":
        kwargs["options"] = f"-c statement_timeout={ps.statement_timeout_ms}"
        return kwargs
    # PgBouncer refuses start-up options, on its session-mode databases too (the role's own statement_timeout
    # applies: `fleet check` says whether it is set); in transaction mode a statement psycopg prepared on one
    # server connection is missing on the next.
    if not session:
        kwargs["prepare_threshold"] = None
    return kwargs


def build_pool(
    settings: Settings,
    *,
    role: str,
    max_size: int | None = None,
    min_size: int | None = None,
    timeout: float | None = None,
    session: bool = False,
) -> ConnectionPool:
    """A closed pool configured from settings; `role` names the connections in pg_stat_activity.

    `session=True`: connections to FLEET_POOL__SESSION_URL (behind a pooler), for work that keeps one server
    session across transactions.
    """
    ps: PoolSettings = settings.pool
    size_max = max_size if max_size is not None else ps.max_size
    size_min = min(min_size if min_size is not None else ps.min_size, size_max)
    return ConnectionPool(
        settings.session_conninfo if session else settings.database_conninfo,
        min_size=size_min,
        max_size=size_max,
        timeout=timeout if timeout is not None else ps.timeout,
        max_lifetime=ps.max_lifetime,
        max_idle=ps.max_idle,
        check=IdleCheck(ps.check_idle_seconds),
        kwargs=connection_kwargs(settings, role, session=session),
        name=f"fleet-{role}",
        open=False,
    )


def open_process_pool(
    *,
    role: str,
    settings: Settings | None = None,
    max_size: int | None = None,
    timeout: float | None = None,
    wait: bool = False,
) -> ConnectionPool:
    """Open this process's pool; returns at once unless `wait` (connections are made in the background)."""
    global _pool, _owner_pid
    with _lock:
        if _pool is not None and _owner_pid == os.getpid():
            return _pool
        # A pool inherited through fork belongs to the parent: drop the reference, never close its sockets.
        pool = build_pool(settings or get_settings(), role=role, max_size=max_size, timeout=timeout)
        pool.open(wait=wait)
        _pool, _owner_pid = pool, os.getpid()
        log.info("opened connection pool role=%s max_size=%s pid=%s", role, pool.max_size, _owner_pid)
        return pool


def get_pool(*, role: str = "cli", max_size: int | None = 1) -> ConnectionPool:
    """This process's pool, opened lazily (beat, CLI, solo workers) when no worker hook opened it."""
    if _pool is not None and _owner_pid == os.getpid():
        return _pool
    return open_process_pool(role=role, max_size=max_size)


def pool_role(pool: ConnectionPool) -> str:
    """The role a pool was built for (`fleet-<role>` is its name and its connections' application name)."""
    return pool.name.removeprefix("fleet-")


def process_role() -> str:
    """This process's role: its pool's, or `cli` before it has one."""
    return pool_role(_pool) if _pool is not None and _owner_pid == os.getpid() else "cli"


def get_session_pool() -> ConnectionPool:
    """Connections that keep one server session across transactions (a session advisory lock).

    Without a pooler this is the process's pool. Behind a transaction-mode pooler it is a pool of one
    connection to FLEET_POOL__SESSION_URL, one of the process's resources (made on first use, after fork,
    closed with the others at child shutdown).
    """
    settings = get_settings()
    if settings.pool.pooler == "none":
        return get_pool()

    def make() -> ConnectionPool:
        pool = build_pool(settings, role=f"{process_role()}-session", max_size=1, min_size=0, session=True)
        pool.open(wait=False)
        return pool

    return resource("session-pool", make, lambda pool: pool.close(timeout=5))


def close_process_pool(timeout: float = 5.0) -> None:
    """Close the pool this process opened; a no-op when there is none."""
    global _pool, _owner_pid
    with _lock:
        pool, owner = _pool, _owner_pid
        _pool, _owner_pid = None, None
    if pool is not None and owner == os.getpid():
        pool.close(timeout=timeout)
        log.info("closed connection pool pid=%s", owner)


def pool_is_open() -> bool:
    return _pool is not None and _owner_pid == os.getpid() and not _pool.closed
