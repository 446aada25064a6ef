"""The pool and the query metrics are per-process objects in the registry: a forked child starts without its
parent's pool and counts, and closing the process's resources closes its pool too."""

from __future__ import annotations

import os

import psycopg

from shared.core.db import run
from shared.core.pool import close_process_pool, get_pool, open_process_pool, pool_is_open
from shared.core.resources import close_all
from shared.observability.query_metrics import query_metrics


def test_a_forked_child_has_neither_its_parents_pool_nor_its_query_counts(db: psycopg.Connection) -> None:
    parent_pool = open_process_pool(role="test", max_size=1, wait=True)
    run("SELECT 1", table=None, operation="select")
    assert query_metrics().snapshot()["total"] >= 1
    pid = os.fork()
    if pid == 0:  # the child: nothing inherited is handed out
        fresh = query_metrics().snapshot()["total"] == 0 and not pool_is_open()
        os._exit(0 if fresh else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert get_pool() is parent_pool, "the parent keeps its own"
    close_process_pool()


def test_closing_the_process_resources_closes_its_pool(db: psycopg.Connection) -> None:
    pool = open_process_pool(role="test", max_size=1, wait=True)
    close_all()
    assert pool.closed
    assert not pool_is_open()
    close_process_pool()  # a no-op once closed with the others
