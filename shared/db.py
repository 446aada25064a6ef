"""Connections, transactions and the one function every query goes through.

Inside `with transaction():` every repository call in this thread or task uses the transaction's connection,
so composing repositories never opens a second connection behind the caller's back. Nesting makes a
savepoint: an inner failure rolls back the inner block only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from shared.errors import translated_errors
from shared.pool import get_pool
from shared.query_metrics import query_metrics

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
        get_pool().connection() as pooled,
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
    with translated_errors(table=None, operation="connect"), get_pool().connection() as pooled:
        yield pooled


def _statement_text(query: Query, conn: Connection) -> str:
    return query if isinstance(query, str) else query.as_string(conn)


def run(
    query: Query,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    table: str | None,
    operation: str,
    conn: Connection | None = None,
) -> list[dict[str, Any]]:
    """Execute one statement and return its rows as dicts; timed, and errors typed."""
    with connection(conn) as active, translated_errors(table=table, operation=operation):
        started = time.perf_counter()
        failed = True
        try:
            with active.cursor(row_factory=dict_row) as cur:
                cur.execute(query, params)
                rows = cur.fetchall() if cur.description is not None else []
            failed = False
            return rows
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            query_metrics().record(operation, elapsed_ms, _statement_text(query, active), failed=failed)
