"""The one psycopg connection pool of this process.

A pool must never cross a fork: sockets shared by parent and child corrupt each other's sessions. The pool is
one of the process's resources (`shared/core/resources.py`), so a child never sees its parent's and it is
closed with the others at child shutdown. Worker children open theirs in `worker_process_init`; beat and
command-line tools open theirs on first use.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from typing import Any, cast

import psycopg
from psycopg_pool import ConnectionPool

from shared.core.resources import made, resource, take
from shared.core.settings import PoolSettings, Settings, get_settings

log = logging.getLogger(__name__)

PROCESS_POOL = "pool"  # its name in the registry


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
    """Open this process's pool; returns at once unless `wait` (connections are made in the background).

    A pool already open in this process is returned as it is; one inherited through fork is never seen (the
    registry keys by pid), so its sockets stay the parent's and are never closed here.
    """
    opened: list[ConnectionPool] = []

    def make() -> ConnectionPool:
        pool = build_pool(settings or get_settings(), role=role, max_size=max_size, timeout=timeout)
        pool.open(wait=False)
        log.info("opened connection pool role=%s max_size=%s pid=%s", role, pool.max_size, os.getpid())
        opened.append(pool)
        return pool

    pool = resource(PROCESS_POOL, make, _close)
    if wait and opened:  # waited for outside the registry's lock, which other resources share
        try:
            pool.wait()
        except BaseException:
            take(PROCESS_POOL)  # the pool closed itself: the next call opens a new one
            raise
    return pool


def _this_process_pool() -> ConnectionPool | None:
    return cast(ConnectionPool | None, made(PROCESS_POOL))


def get_pool(*, role: str = "cli", max_size: int | None = 1) -> ConnectionPool:
    """This process's pool, opened lazily (beat, CLI, solo workers) when no worker hook opened it."""
    pool = _this_process_pool()
    return pool if pool is not None else open_process_pool(role=role, max_size=max_size)


def pool_role(pool: ConnectionPool) -> str:
    """The role a pool was built for (`fleet-<role>` is its name and its connections' application name)."""
    return pool.name.removeprefix("fleet-")


def process_role() -> str:
    """This process's role: its pool's, or `cli` before it has one."""
    pool = _this_process_pool()
    return pool_role(pool) if pool is not None else "cli"


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


def _close(pool: ConnectionPool, timeout: float = 5.0) -> None:
    pool.close(timeout=timeout)
    log.info("closed connection pool pid=%s", os.getpid())


def close_process_pool(timeout: float = 5.0) -> None:
    """Close the pool this process opened; a no-op when there is none."""
    pool = cast(ConnectionPool | None, take(PROCESS_POOL))
    if pool is not None:
        _close(pool, timeout)


def pool_is_open() -> bool:
    pool = _this_process_pool()
    return pool is not None and not pool.closed
