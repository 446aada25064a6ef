"""What `pipelined` blocks assume of psycopg's internals (shared/core/pipeline_batching.py), checked against the
installed psycopg and a real PostgreSQL: a statement queued in a block waits in psycopg's queue, reaches the
server only when the block next reads (or ends), and everything queued leaves then, in one command."""

from __future__ import annotations

import inspect

import psycopg
import pytest

from shared.core import pipeline_batching
from shared.core.db import pipelined, pipelined_transaction, queue, run, send
from shared.core.pool import get_pool
from shared.data.errors import ConflictError

LOCK = 31_000_001  # an advisory lock key no other test takes
HELD = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted"


def _held(db: psycopg.Connection) -> bool:
    return db.execute(HELD, (LOCK,)).fetchone()[0] == 1


def test_the_psycopg_internals_the_batching_uses_exist_as_it_expects(db: psycopg.Connection) -> None:
    assert inspect.isgeneratorfunction(getattr(psycopg.Pipeline, pipeline_batching.COMMUNICATE))
    with psycopg.connect(db.info.dsn, autocommit=True) as conn, conn.pipeline() as pipeline:
        assert len(pipeline.command_queue) == 0, "psycopg's queue of libpq calls is a sized collection"
        conn.execute("SELECT 1")
        assert len(pipeline.command_queue) == 0, "psycopg itself sends each statement as it is executed"


def test_a_statement_sent_in_a_block_reaches_the_server_at_the_next_reading_with_all_queued_before_it(
    db: psycopg.Connection,
) -> None:
    with get_pool().connection() as conn:
        try:
            with pipelined(conn):
                send("SELECT pg_advisory_lock(%s)", (LOCK,), table=None, operation="lock", conn=conn)
                read = queue("SELECT 2 AS two", table=None, operation="select", conn=conn)
                pipeline = conn._pipeline
                assert pipeline is not None
                assert len(pipeline.command_queue) >= 2, "both statements wait in psycopg's queue"
                assert not _held(db), "a statement only queued has not reached the server"
                assert read() == [{"two": 2}]
                assert len(pipeline.command_queue) == 0, "the reading sent everything queued"
                assert _held(db), "the statement queued before the reading ran with it"
                send("SELECT pg_advisory_unlock(%s)", (LOCK,), table=None, operation="unlock", conn=conn)
                assert _held(db), "queued after the last reading: it waits for the block's end"
            assert not _held(db), "the block's end sent it"
        finally:
            run("SELECT pg_advisory_unlock_all()", table=None, operation="unlock", conn=conn)
        assert conn._pipeline is None
        with conn.pipeline() as plain:  # a pipeline outside a block is psycopg's own again
            assert pipeline_batching.COMMUNICATE not in vars(plain)


def _rename_then_insert_a_taken_id_then_read(conn: psycopg.Connection) -> None:
    with pipelined(conn), pipelined_transaction(conn):
        send("UPDATE companies SET title = 'renamed' WHERE id = 800501", table="companies", operation="u", conn=conn)
        send("INSERT INTO companies (id, title) VALUES (800501, 'again')", table="companies", operation="i", conn=conn)
        queue("SELECT 1 AS one", table=None, operation="select", conn=conn)()


def test_a_failure_queued_before_a_reading_is_raised_by_that_reading_and_the_block_rolls_back(
    db: psycopg.Connection,
) -> None:
    db.execute("INSERT INTO companies (id, title) VALUES (800501, 'taken')")
    with get_pool().connection() as conn:
        with pytest.raises(ConflictError):
            _rename_then_insert_a_taken_id_then_read(conn)
        assert run("SELECT 1 AS alive", table=None, operation="select", conn=conn) == [{"alive": 1}]
    assert db.execute("SELECT title FROM companies WHERE id = 800501").fetchone()[0] == "taken"
