"""Reads that tolerate lag on a real streaming replica (pg_basebackup of a test cluster, on its own port):
used while current, skipped while lagging or down, with the fallback in health; writes stay on the primary."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from shared.core.db import run, transaction
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.replica import current_verdict, probe, reading
from shared.core.resources import close_all
from shared.core.settings import Settings, load_settings
from shared.data.errors import DataLayerError
from shared.health.checks import check_database
from shared.health.report import redis_client
from tests.support.postgres_server import OwnPostgres
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow
COMPANY = 5150


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[OwnPostgres, OwnPostgres, str, str]]:
    primary, replica = OwnPostgres(), OwnPostgres()
    try:
        primary.init()
        primary.start()
        primary_db = primary.create_database("fleet_replica_test")
        upgrade(primary_db)
        replica.clone_as_standby_of(primary)
        replica.start()
        yield primary, replica, primary_db, replica.conninfo("fleet_replica_test")
    finally:
        replica.remove()
        primary.remove()


def settings_for(pair: tuple, **replica: object) -> Settings:
    _, _, primary_db, replica_db = pair
    return load_settings(database_url=primary_db, replica={"url": replica_db, "check_seconds": 0, **replica})


@pytest.fixture
def fleet_on_pair(pair: tuple) -> Iterator[tuple]:
    """This process's pool on the pair's primary, a company whose title the tests change, replay running."""
    close_process_pool()
    open_process_pool(role="test", settings=settings_for(pair), max_size=2, wait=True)
    with transaction():
        run(
            "INSERT INTO companies (id, title) VALUES (%s, 'first') ON CONFLICT (id) DO UPDATE SET title = 'first'",
            (COMPANY,),
            table="companies",
            operation="upsert",
        )
    with psycopg.connect(pair[3], autocommit=True) as standby:
        if standby.execute("SELECT pg_is_wal_replay_paused()").fetchone()[0]:
            standby.execute("SELECT pg_wal_replay_resume()")
        wait_until(lambda: title_on(standby) == "first", 20, "the replica caught up")
    yield pair
    close_all()  # the replica pool, with the process's other resources
    close_process_pool()


def title_on(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT title FROM companies WHERE id = %s", (COMPANY,)).fetchone()
    return row[0] if row else None


def title() -> str:
    return run("SELECT title FROM companies WHERE id = %s", (COMPANY,), table="companies", operation="select")[0][
        "title"
    ]


def rename(new: str) -> None:
    with transaction():
        run("UPDATE companies SET title = %s WHERE id = %s", (new, COMPANY), table="companies", operation="update")


def test_reads_go_to_a_current_replica_and_writes_and_transactions_stay_on_the_primary(fleet_on_pair: tuple) -> None:
    settings = settings_for(fleet_on_pair, max_lag_seconds=60)
    with psycopg.connect(fleet_on_pair[3], autocommit=True) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")  # the replica keeps showing what it had
        rename("second")
        with reading(settings):
            assert title() == "first", "read on the replica, a few seconds behind"
            with pytest.raises(DataLayerError):  # a write inside a read block fails instead of diverging
                run("UPDATE companies SET title = 'x' WHERE id = %s", (COMPANY,), table="companies", operation="update")
        with transaction(), reading(settings):
            assert title() == "second", "inside a transaction, reads are the transaction's"
        standby.execute("SELECT pg_wal_replay_resume()")
    verdict = current_verdict(settings)
    assert verdict is not None
    assert verdict.usable


def test_a_lagging_replica_is_skipped_until_it_catches_up_and_health_says_so(fleet_on_pair: tuple) -> None:
    settings = settings_for(fleet_on_pair, max_lag_seconds=1)
    with psycopg.connect(fleet_on_pair[3], autocommit=True) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
        rename("third")
        time.sleep(1.5)  # the replica's last replayed transaction is now over a second old
        with reading(settings):
            assert title() == "third", "the lagging replica was skipped: read on the primary"
        verdict = current_verdict(settings)
        assert verdict is not None
        assert not verdict.usable
        assert "lags" in (verdict.reason or "")
        assert (verdict.lag_seconds or 0) > 1
        health = check_database(settings, redis_client(settings))
        assert health.status == "warning"
        assert any("replica not used" in problem and "lags" in problem for problem in health.problems)
        assert health.details["replica"]["in_use"] is False

        standby.execute("SELECT pg_wal_replay_resume()")
        wait_until(lambda: title_on(standby) == "third", 20, "the replica caught up")
    with reading(settings):
        title()
    assert current_verdict(settings).usable  # type: ignore[union-attr]
    assert check_database(settings, redis_client(settings)).details["replica"]["in_use"] is True


def test_a_stopped_replica_is_skipped_without_failing_a_read_and_used_again_when_back(fleet_on_pair: tuple) -> None:
    _, replica, _, _ = fleet_on_pair
    settings = settings_for(fleet_on_pair)
    with reading(settings):
        assert title() == "first"
    replica.stop()
    try:
        rename("fourth")
        started = time.monotonic()
        with reading(settings):
            assert title() == "fourth", "the primary answered"
        assert time.monotonic() - started < settings.replica.connect_timeout + 2
        assert "unreachable" in (current_verdict(settings).reason or "")  # type: ignore[union-attr]
        health = check_database(settings, redis_client(settings))
        assert any("replica not used" in problem and "unreachable" in problem for problem in health.problems)
    finally:
        replica.start()
    wait_until(lambda: probe(settings).usable, 30, "the replica back and caught up")  # type: ignore[union-attr]
    with reading(settings):
        assert title() == "fourth"
    assert current_verdict(settings).usable  # type: ignore[union-attr]
