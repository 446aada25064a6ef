"""Connections, transactions and the one function every query goes through.

Inside `with transaction():` every repository call in this thread or task uses the transaction's connection,
so composing repositories never opens a second connection behind the caller's back. Nesting makes a
savepoint: an inner failure rolls back the inner block only.

Inside `with pipelined(conn):` statements leave together (psycopg's pipeline mode): a statement sent with
`send`, or queued with `queue` and read later, waits for the next read, so a path that needs only a few
results costs a few round trips, not one per statement, and everything queued until a read leaves in one write
(shared/core/pipeline_batching.py). `run` and `execute` read at once, as outside.

Every statement is timed from when it leaves until its result is in (`fleet_statement_seconds`, the process's
query metrics). In a pipeline a statement's own time cannot be told apart: a reading is timed as the wait for
its result, which holds every statement queued before it, and the block's closing sync under the last statement
queued after the last reading; a statement only sent is in the time of the reading or the sync after it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
import psycopg.copy
from psycopg import pq, sql
from psycopg.rows import dict_row, tuple_row

from shared.core.db_errors import translated_errors
from shared.core.pipeline_batching import Batching
from shared.core.pool import get_pool, pool_role
from shared.observability.prometheus_metrics import observe_pool_wait, observe_statement
from shared.observability.query_metrics import query_metrics

Connection = psycopg.Connection[Any]
Query = str | sql.Composable

_current: ContextVar[Connection | None] = ContextVar("fleet_transaction_connection", default=None)
_pipelined_tx: ContextVar[Connection | None] = ContextVar("fleet_pipelined_transaction", default=None)


class _Unread:
    """The statements a `pipelined` block queued after its last reading: its closing sync waits for them, and
    is timed under the last of them (the sync alone when none is left). `batching` keeps them in psycopg's
    queue until they are sent together."""

    __slots__ = ("batching", "conn", "last", "queued", "read")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queued = 0
        self.read = 0
        self.last: tuple[Query, str | None, str] = ("SYNC", None, "sync")
        self.batching: Batching | None = None


_unread: ContextVar[_Unread | None] = ContextVar("fleet_pipeline_unread", default=None)
_savepoints = itertools.count(1)
_ROWS_STATUSES = frozenset({pq.ExecStatus.TUPLES_OK, pq.ExecStatus.SINGLE_TUPLE})  # rows, even of no columns
ROLLBACK_TRIES = 3


def current_connection() -> Connection | None:
    return _current.get()


@contextmanager
def transaction(conn: Connection | None = None) -> Iterator[Connection]:
    """Commit everything inside as one unit, or nothing. Nested use creates a savepoint."""
    conn = conn or _current.get()
    if conn is not None and _pipelined_tx.get() is conn:
        with _pipelined_savepoint(conn):
            yield conn
        return
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
        _record(statement, table, operation, conn, time.perf_counter() - started, failed)


def _record(
    statement: Query, table: str | None, operation: str, conn: Connection, elapsed: float, failed: bool
) -> None:
    """A statement's time in the process's query metrics (its text rendered for a slow one only) and Prometheus."""
    text = functools.partial(_statement_text, statement, conn)
    query_metrics().record(operation, elapsed * 1000, text, failed=failed)
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
        _results_in(cur, active)
        return cur.rowcount


@contextmanager
def overlapped(
    query: Query,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    table: str | None,
    operation: str,
    conn: Connection,
    dict_rows: bool = False,
) -> Iterator[psycopg.Cursor[Any]]:
    """The statement is sent on entering (pipeline mode) and its result read on leaving: the block's work and
    the server's overlap. Read the yielded cursor after the block (`rowcount`, or its rows, as dicts with
    `dict_rows`). Timed until the result is read, so the block counts in the statement's time. The block must
    not use `conn`: its own statements run elsewhere (`detached`)."""
    cur = conn.cursor(row_factory=dict_row if dict_rows else tuple_row)  # left open: read after the block
    with translated_errors(table=table, operation=operation), _measured(query, table, operation, conn), conn.pipeline():
        cur.execute(query, params)
        yield cur


@contextmanager
def detached() -> Iterator[None]:
    """The block's statements run outside the current transaction, each borrowing a connection of its own (the
    reads a process makes while its transaction's connection runs an `overlapped` statement)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def copy_binary(statement: Query, data: BinaryCopyData, *, table: str | None, conn: Connection | None = None) -> None:
    """COPY ... FROM STDIN (FORMAT BINARY) of rows formatted before (`binary_copy_data`): the data is only sent."""
    with (
        connection(conn) as active,
        translated_errors(table=table, operation="copy"),
        _measured(statement, table, "copy", active),
        active.cursor() as cur,
        cur.copy(statement) as copy,
    ):
        copy.write(data.data)


class BinaryCopyData:
    """Rows already formatted as binary COPY data, the whole format (header, rows, trailer): psycopg sends
    such a block as it is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Collected(psycopg.copy.Writer):
    """Where psycopg's COPY formatting writes when the data is kept instead of sent (psycopg.copy.Writer)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> None:
        self.parts.append(bytes(data))


def binary_copy_data(rows: Iterable[Sequence[Any]], types: Sequence[int], conn: Connection) -> BinaryCopyData:
    """Format rows as binary COPY data now, with `conn`'s adapters (nothing is sent): the formatting moves
    out of the COPY, so it can be done while the server works on something else."""
    collected = _Collected()
    with conn.cursor() as cur:
        copy = psycopg.Copy(cur, binary=True, writer=collected)
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
        copy.finish(None)
    return BinaryCopyData(b"".join(collected.parts))


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
        _results_in(cur, active)
        return _rows_of(cur)


def queue(
    query: Query,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    table: str | None,
    operation: str,
    conn: Connection,
) -> Callable[[], list[dict[str, Any]]]:
    """Execute one statement and return the reading of its rows for later: inside `pipelined`, every statement
    queued before the first reading leaves with it, in one round trip; outside, the statement runs now."""
    if not _in_pipeline(conn):
        with translated_errors(table=table, operation=operation), _measured(query, table, operation, conn):
            cur = conn.cursor(row_factory=dict_row)
            cur.execute(query, params)
        return lambda: _rows_of(cur)
    unread = _unread.get()
    if unread is not None and unread.conn is not conn:
        unread = None  # a pipeline of psycopg's own, not a `pipelined` block: its end is not timed
    batching = unread.batching if unread is not None else None
    with translated_errors(table=table, operation=operation):
        cur = conn.cursor(row_factory=dict_row)
        with batching if batching is not None else contextlib.nullcontext():
            cur.execute(query, params)  # queued: sent and timed at the next reading, with what is queued before it
    if unread is not None:
        unread.queued += 1
        unread.last = (query, table, operation)
    position = unread.queued if unread is not None else 0

    def rows() -> list[dict[str, Any]]:
        if cur.pgresult is not None:  # already read (an earlier reading's sync brought it)
            return _rows_of(cur)
        with translated_errors(table=table, operation=operation), _measured(query, table, operation, conn):
            if batching is not None:
                batching.flush(conn)  # what is still queued, this statement included, leaves in one write
            _results_in(cur, conn)
            if unread is not None:
                unread.read = max(unread.read, position)
            return _rows_of(cur)

    return rows


def send(
    query: Query,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    table: str | None,
    operation: str,
    conn: Connection,
) -> None:
    """Execute a statement whose result nobody reads: inside `pipelined`, it leaves with the next reading (or the
    block's end), and a failure shows there; outside, it runs now."""
    queue(query, params, table=table, operation=operation, conn=conn)


def _rows_of(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
    """The statement's rows; none for a statement that returns no rows. Asked through `description`, psycopg built
    a Column object for every column of every result only to be told whether there were any."""
    result = cur.pgresult
    if result is None or not (result.nfields or result.status in _ROWS_STATUSES):
        return []
    return cur.fetchall()


def _in_pipeline(conn: Connection) -> bool:
    return conn.pgconn.pipeline_status != pq.PipelineStatus.OFF


def _results_in(cur: psycopg.Cursor[Any], conn: Connection) -> None:
    """In pipeline mode a statement's result arrives only when read: read it now (with everything queued before
    it). psycopg reads rows only; a statement without rows is read all the same and says so without a SQLSTATE
    (a server's error has one, and is raised)."""
    if cur.pgresult is not None or not _in_pipeline(conn):
        return
    try:
        cur.fetchall()
    except psycopg.ProgrammingError as exc:
        if exc.sqlstate is not None:
            raise
        return
    if cur.rownumber:
        cur.scroll(0, mode="absolute")  # the rows stay for the caller to read


@contextmanager
def pipelined(conn: Connection) -> Iterator[Connection]:
    """The block's statements on `conn` leave together, a round trip for each reading and one at the end; see the
    module's docstring. `conn` must be in autocommit mode and outside a transaction block of psycopg's."""
    unread = _Unread(conn)
    token = _unread.set(unread)
    try:
        with (
            translated_errors(table=None, operation="pipeline"),
            _closing_sync(unread) as closing,
            conn.pipeline() as pipeline,
        ):
            unread.batching = Batching(pipeline)  # in place until the pipeline's end has sent what is left
            yield conn
            closing.append(time.perf_counter())
    except BaseException:
        _roll_back(conn)  # a failure the pipeline's end found leaves its transaction open, aborted
        raise
    finally:
        if unread.batching is not None:
            unread.batching.release()
        _unread.reset(token)


@contextmanager
def _closing_sync(unread: _Unread) -> Iterator[list[float]]:
    """Times a pipeline's closing sync, from the moment its block appends to the list given until the pipeline
    has been left: the statements queued since the last reading, and the server's work on them."""
    started: list[float] = []
    failed = True
    try:
        yield started
        failed = False
    finally:
        if started:
            query, table, operation = unread.last if unread.queued > unread.read else ("SYNC", None, "sync")
            _record(query, table, operation, unread.conn, time.perf_counter() - started[0], failed)


def _roll_back(conn: Connection) -> None:
    """Roll back whatever transaction the connection is in. In pipeline mode psycopg syncs first, and the results
    still queued may raise the failure again: the next try finds the pipeline clean and rolls back. A connection
    still failing is broken, and the pool's to discard."""
    for _ in range(ROLLBACK_TRIES):
        try:
            conn.rollback()
        except psycopg.Error:
            continue
        return


@contextmanager
def pipelined_transaction(conn: Connection) -> Iterator[Connection]:
    """One transaction inside `pipelined`: BEGIN and COMMIT are queued like its statements (psycopg's own
    transaction block would sync the pipeline at both ends, two round trips more). On an error the pipeline is
    synced and the transaction rolled back before the error goes on."""
    send("BEGIN", table=None, operation="begin", conn=conn)
    tokens = _current.set(conn), _pipelined_tx.set(conn)
    try:
        yield conn
        send("COMMIT", table=None, operation="commit", conn=conn)
    except BaseException:
        _roll_back(conn)
        raise
    finally:
        _pipelined_tx.reset(tokens[1])
        _current.reset(tokens[0])


@contextmanager
def _pipelined_savepoint(conn: Connection) -> Iterator[None]:
    """`transaction()` nested in `pipelined_transaction`: a savepoint by statements. psycopg's own nested block
    reads the transaction's status, which libpq learns only at a Sync: it would take the block for an outer
    transaction and commit the caller's. On an error, a Sync ends the pipeline's aborted state first (the
    server skips every statement until one) and the savepoint is rolled back."""
    name = f"fleet_savepoint_{next(_savepoints)}"
    send(f"SAVEPOINT {name}", table=None, operation="savepoint", conn=conn)
    try:
        yield
    except BaseException:
        with contextlib.suppress(psycopg.Error), conn.pipeline():
            pass  # entering and leaving a nested pipeline block syncs it
        run(f"ROLLBACK TO SAVEPOINT {name}", table=None, operation="rollback", conn=conn)
        raise
    send(f"RELEASE SAVEPOINT {name}", table=None, operation="savepoint", conn=conn)


def database_now(conn: Connection | None = None) -> Any:
    """The transaction's start time by the database clock (one clock for every worker host)."""
    return run("SELECT now() AS now", table=None, operation="select", conn=conn)[0]["now"]
