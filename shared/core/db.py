"""Connections, transactions and the one function every query goes through.

Inside `with transaction():` every repository call in this thread or task uses the transaction's connection,
so composing repositories never opens a second connection behind the caller's back. Nesting makes a
savepoint: an inner failure rolls back the inner block only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from shared.core.db_errors import translated_errors
from shared.core.pool import get_pool, pool_role
from shared.observability.prometheus_metrics import observe_pool_wait, observe_statement
from shared.observability.query_metrics import query_metrics

Connection = psycopg.Connection[Any]
Query = str | sql.Composable

_current: ContextVar[Connection | None] = ContextVar("fleet_transaction_connection", default=None)


def current_connection() -> Connection | None:
    return _current.get()


@contextmanager
def transaction(conn: Connection | None = None) -> Iterator[Connection]:
    """Commit everything inside as one unit, or nothing. Nested use creates a savepoint."""
    conn = conn or _current.get()
    if conn is not None:
        with translated_errors(table=None, operation="transaction"), conn.transaction():
            token = _current.set(conn)
            try:
                yield conn
            finally:
                _current.reset(token)
        return
    with (
        translated_errors(table=None, operation="transaction"),
        _borrowed() as pooled,
        pooled.transaction(),
    ):
        token = _current.set(pooled)
        try:
            yield pooled
        finally:
            _current.reset(token)


@contextmanager
def connection(conn: Connection | None = None) -> Iterator[Connection]:
    """The caller's connection, else the current transaction's, else one borrowed for this statement."""
    conn = conn or _current.get()
    if conn is not None:
        yield conn
        return
    with translated_errors(table=None, operation="connect"), _borrowed() as pooled:
        yield pooled


@contextmanager
def _borrowed() -> Iterator[Connection]:
    """A connection from this process's pool; the wait for it is measured (a pool too small shows here)."""
    pool = get_pool()
    started = time.perf_counter()
    with pool.connection() as pooled:
        observe_pool_wait(pool_role(pool), time.perf_counter() - started)
        yield pooled


@contextmanager
def using(conn: Connection) -> Iterator[Connection]:
    """Run the block's repository calls on `conn` (a replica's, say) without opening a transaction on it."""
    token = _current.set(conn)
    try:
        yield conn
    finally:
        _current.reset(token)


def _statement_text(query: Query, conn: Connection) -> str:
    return query if isinstance(query, str) else query.as_string(conn)


@contextmanager
def _measured(statement: Query, table: str | None, operation: str, conn: Connection) -> Iterator[None]:
    started = time.perf_counter()
    failed = True
    try:
        yield
        failed = False
    finally:
        elapsed = time.perf_counter() - started
        query_metrics().record(operation, elapsed * 1000, lambda: _statement_text(statement, conn), failed=failed)
        observe_statement(table, operation, elapsed)


def execute(
    query: Query,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    table: str | None,
    operation: str,
    conn: Connection | None = None,
) -> int:
    """Execute one statement and return how many rows it affected; timed, and errors typed."""
    with (
        connection(conn) as active,
        translated_errors(table=table, operation=operation),
        _measured(query, table, operation, active),
        active.cursor() as cur,
    ):
        cur.execute(query, params)
        return cur.rowcount


def copy_rows(
    statement: Query,
    rows: Iterable[Sequence[Any]],
    *,
    table: str | None,
    types: Sequence[int] | None = None,
    conn: Connection | None = None,
) -> None:
    """Stream rows through COPY ... FROM STDIN (binary when `types`, the columns' OIDs, are given)."""
    with (
        connection(conn) as active,
        translated_errors(table=table, operation="copy"),
        _measured(statement, table, "copy", active),
        active.cursor() as cur,
        cur.copy(statement) as copy,
    ):
        if types is not None:
            copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def run(
    query: Query,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    table: str | None,
    operation: str,
    conn: Connection | None = None,
) -> list[dict[str, Any]]:
    """Execute one statement and return its rows as dicts; timed, and errors typed."""
    with (
        connection(conn) as active,
        translated_errors(table=table, operation=operation),
        _measured(query, table, operation, active),
        active.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute(query, params)
        return cur.fetchall() if cur.description is not None else []


def database_now(conn: Connection | None = None) -> Any:
    """The transaction's start time by the database clock (one clock for every worker host)."""
    return run("SELECT now() AS now", table=None, operation="select", conn=conn)[0]["now"]
