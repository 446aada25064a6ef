"""Statements sent together (shared/core/db.py `pipelined`) keep what transactions promise, over real PostgreSQL.

The answering path sends its statements in a few round trips instead of one each; a message must still be
answered all or nothing, a failed step inside it (a booking's savepoint) must undo only itself, and a failure
in a statement nobody read must not pass unnoticed.
"""

from __future__ import annotations

import psycopg
import pytest

from shared.core.db import pipelined, pipelined_transaction, queue, run, send, transaction
from shared.core.pool import get_pool
from shared.data.errors import ConflictError
from shared.observability.query_metrics import query_metrics

pytestmark = pytest.mark.usefixtures("salon")

NAMES = "SELECT array_agg(title ORDER BY title) FROM companies WHERE id BETWEEN 800000 AND 800099"
ADD = "INSERT INTO companies (id, title) VALUES (%s, %s)"


def _titles(db: psycopg.Connection) -> list[str]:
    return db.execute(NAMES).fetchone()[0] or []


def test_a_pipelined_transaction_commits_every_statement_it_sent(db: psycopg.Connection) -> None:
    with get_pool().connection() as conn, pipelined(conn), pipelined_transaction(conn):
        send(ADD, (800001, "a"), table="companies", operation="insert", conn=conn)
        read = queue("SELECT title FROM companies WHERE id = %s", (800001,), table=None, operation="s", conn=conn)
        assert read() == [{"title": "a"}], "a later statement sees the earlier one's row"
        send(ADD, (800002, "b"), table="companies", operation="insert", conn=conn)
    assert _titles(db) == ["a", "b"]


def _insert_twice(conn: psycopg.Connection) -> None:
    with pipelined_transaction(conn):
        send(ADD, (800001, "a"), table="companies", operation="insert", conn=conn)
        send(ADD, (800001, "again"), table="companies", operation="insert", conn=conn)  # the same id
        send(ADD, (800002, "b"), table="companies", operation="insert", conn=conn)


def _insert_twice_pipelined(conn: psycopg.Connection) -> None:
    with pipelined(conn):
        _insert_twice(conn)


def test_a_failure_in_a_statement_nobody_read_fails_the_transaction_and_undoes_it(db: psycopg.Connection) -> None:
    """The failure shows at the next reading or at the pipeline's end, whichever comes first (results that have
    arrived are read as more statements are queued): either way the transaction is rolled back."""
    with get_pool().connection() as conn:
        with pytest.raises(ConflictError):
            _insert_twice_pipelined(conn)
        assert run("SELECT 1 AS alive", table=None, operation="select", conn=conn) == [{"alive": 1}]
    assert _titles(db) == [], "nothing of the failed transaction stays"


def _insert_twice_without_a_transaction(conn: psycopg.Connection) -> None:
    with pipelined(conn):
        send(ADD, (800001, "a"), table="companies", operation="insert", conn=conn)
        send(ADD, (800001, "again"), table="companies", operation="insert", conn=conn)  # nobody reads it


def test_a_failure_found_at_the_pipelines_end_leaves_the_connection_usable(db: psycopg.Connection) -> None:
    """Without BEGIN, the statements between two Syncs are one implicit transaction: all or nothing."""
    with get_pool().connection() as conn:
        with pytest.raises(ConflictError):
            _insert_twice_without_a_transaction(conn)
        assert run("SELECT 1 AS alive", table=None, operation="select", conn=conn) == [{"alive": 1}]
    assert _titles(db) == []


def _clash_inside() -> None:
    with transaction() as conn:
        send(ADD, (800002, "inside"), table="companies", operation="insert", conn=conn)
        run(ADD, (800001, "clash"), table="companies", operation="insert")


def test_a_nested_block_that_fails_undoes_only_itself(db: psycopg.Connection) -> None:
    with get_pool().connection() as conn, pipelined(conn), pipelined_transaction(conn):
        send(ADD, (800001, "before"), table="companies", operation="insert", conn=conn)
        with pytest.raises(ConflictError):
            _clash_inside()
        send(ADD, (800003, "after"), table="companies", operation="insert", conn=conn)
    assert _titles(db) == ["after", "before"]


def _answer_failing_after_a_nested_step(conn: psycopg.Connection) -> None:
    with pipelined_transaction(conn):
        send(ADD, (800001, "outer"), table="companies", operation="insert", conn=conn)
        assert queue("SELECT 1 AS one", table=None, operation="select", conn=conn)() == [{"one": 1}]
        with transaction():
            run(ADD, (800002, "nested"), table="companies", operation="insert")
        raise RuntimeError("the answer fails after its booking step")


def test_a_nested_block_does_not_commit_the_transaction_around_it(db: psycopg.Connection) -> None:
    """libpq learns a pipeline's transaction status only at a Sync: psycopg's own nested block took itself for
    an outer one here and committed the caller's statements before the caller failed."""
    with get_pool().connection() as conn, pipelined(conn), pytest.raises(RuntimeError):
        _answer_failing_after_a_nested_step(conn)
    assert _titles(db) == [], "a failed answer leaves nothing, its nested steps included"


def test_statements_outside_a_pipeline_run_at_once(db: psycopg.Connection) -> None:
    with get_pool().connection() as conn:
        send(ADD, (800001, "now"), table="companies", operation="insert", conn=conn)
        assert _titles(db) == ["now"]
        with pytest.raises(ConflictError):
            send(ADD, (800001, "now"), table="companies", operation="insert", conn=conn)


def _timed(operation: str) -> dict:
    return query_metrics().snapshot()["by_type"].get(operation, {"count": 0, "mean_ms": 0.0})


def test_a_pipelined_reading_is_timed_as_the_wait_for_its_result_and_the_end_under_what_it_waited_for(
    db: psycopg.Connection,
) -> None:
    """What an operator's statement histogram shows for the answering path: a slow statement in a pipeline shows
    in the reading that waited for it, and a slow statement only sent shows in the closing sync, under its own
    name. (Timed as it was queued, both took microseconds: the server's time went unseen.)"""
    with get_pool().connection() as conn, pipelined(conn):  # each sleep starts as it is queued: timed a bit less
        send("SELECT pg_sleep(0.5)", table=None, operation="queued_sleep", conn=conn)
        read = queue("SELECT 1 AS one", table=None, operation="read_after_sleep", conn=conn)
        assert read() == [{"one": 1}]
        send("SELECT pg_sleep(0.5)", table=None, operation="sleep_at_end", conn=conn)
    assert _timed("read_after_sleep")["count"] == 1
    assert _timed("read_after_sleep")["mean_ms"] >= 250, "the reading waited for the sleep queued before it"
    assert _timed("sleep_at_end")["count"] == 1
    assert _timed("sleep_at_end")["mean_ms"] >= 250, "the closing sync is the last statement's time"
    assert _timed("queued_sleep")["count"] == 0, "a statement only sent is in the time of the reading after it"


def test_a_statement_without_rows_reads_as_no_rows_and_one_with_rows_as_its_rows(db: psycopg.Connection) -> None:
    """In a pipeline and outside: an UPDATE without RETURNING has no rows to read, a SELECT that matched nothing
    has none either, and a statement returning rows gives them as dicts."""
    update = "UPDATE companies SET title = title WHERE id = %s"
    with get_pool().connection() as conn:
        assert run(update, (800001,), table=None, operation="update", conn=conn) == []
        assert run("SELECT 1 AS one WHERE false", table=None, operation="select", conn=conn) == []
        with pipelined(conn):
            nothing = queue(update, (800001,), table=None, operation="update", conn=conn)
            none_matched = queue("SELECT 1 AS one WHERE false", table=None, operation="select", conn=conn)
            two = queue("SELECT n FROM generate_series(1, 2) n", table=None, operation="select", conn=conn)
            assert nothing() == []
            assert none_matched() == []
            assert two() == [{"n": 1}, {"n": 2}]
        assert queue("SELECT 2 AS two", table=None, operation="select", conn=conn)() == [{"two": 2}]
