"""One small pool per process: opened after fork, sized by settings, closed at shutdown, within budget."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import psycopg
import pytest

from shared.core import pool as pool_module
from shared.core.pool import close_process_pool, get_pool, open_process_pool
from shared.core.settings import Settings
from tests.support.processes import running_worker, wait_until
from workers.app import app


def fleet_connections(conn: psycopg.Connection, role: str) -> int:
    """Connections of that role to this test database (other runs on the same server use other databases)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
        (f"fleet-{role}",),
    ).fetchone()
    assert row is not None
    return row[0]


def test_importing_the_app_opens_no_pool() -> None:
    import workers.app  # noqa: F401

    assert not pool_module.pool_is_open()


def test_process_pool_is_configured_from_settings(db: psycopg.Connection, settings: Settings) -> None:
    pool = open_process_pool(role="pooltest", wait=True)
    assert pool.max_size == settings.pool.max_size
    with pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute("SHOW application_name").fetchone() == ("fleet-pooltest",)
    assert get_pool() is pool
    close_process_pool()
    # The server drops a backend a moment after the client's goodbye: wait for it, briefly.
    wait_until(lambda: fleet_connections(db, "pooltest") == 0, 5, "the pool's connections closed at the server")


def test_a_connection_cut_while_unused_is_replaced_before_a_task_sees_it(
    db: psycopg.Connection, settings: Settings
) -> None:
    """Busy borrows skip the check (a round trip each); one after a quiet spell is checked, so a connection
    the server dropped meanwhile (a restart, a firewall) is replaced instead of failing the statement."""
    quiet = settings.model_copy(update={"pool": settings.pool.model_copy(update={"check_idle_seconds": 0.3})})
    pool = open_process_pool(role="pooltest", settings=quiet, max_size=1, wait=True)
    with pool.connection() as conn:
        first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    db.execute("SELECT pg_terminate_backend(%s)", (first,))
    wait_until(lambda: fleet_connections(db, "pooltest") == 0, 10, "the backend to go")
    time.sleep(0.4)
    with pool.connection() as conn:
        second = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert second != first
    close_process_pool()


def _child_backend_pid(queue: multiprocessing.Queue) -> None:
    with get_pool(role="pooltest-child").connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    queue.put(row[0] if row else None)
    close_process_pool()


def test_a_forked_child_never_uses_its_parents_pool(db: psycopg.Connection) -> None:
    parent_pool = open_process_pool(role="pooltest", wait=True)
    with parent_pool.connection() as conn:
        parent_backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    results: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_child_backend_pid, args=(results,))
    child.start()
    child.join(20)
    child_backend = results.get(timeout=5)
    assert child_backend not in (None, parent_backend)
    # The parent's pool still works after the child went away.
    with parent_pool.connection() as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == parent_backend
    close_process_pool()


@pytest.mark.slow
def test_prefork_children_each_use_their_own_pool_within_budget(
    db: psycopg.Connection, fleet_env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    concurrency = 3
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        with psycopg.connect(settings.database_conninfo, autocommit=True) as watcher:
            while not stop.is_set():
                peak = max(peak, fleet_connections(watcher, "inbound"))
                time.sleep(0.02)

    with running_worker("inbound", fleet_env, tmp_path, concurrency=concurrency) as worker:
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            results = [app.send_task("workers.inbound.ping", kwargs={"hold_seconds": 0.1}) for _ in range(45)]
            answers = [result.get(timeout=60) for result in results]
        finally:
            stop.set()
            sampler.join()
        children = {answer["pid"] for answer in answers}
        assert len(children) == concurrency, "the load should have reached every child"
        owner_of_backend: dict[int, int] = {}
        for answer in answers:
            assert owner_of_backend.setdefault(answer["backend_pid"], answer["pid"]) == answer["pid"], (
                "two worker children shared one PostgreSQL connection"
            )
        assert 0 < peak <= concurrency * settings.pool.max_size
        assert worker.stop() == 0
    # Warm shutdown closed every child's pool.
    wait_until(lambda: fleet_connections(db, "inbound") == 0, 10, "inbound connections to close")
