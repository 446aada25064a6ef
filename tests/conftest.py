"""Test fixtures over real services: a dedicated PostgreSQL database and Redis db, cleaned per test."""

from __future__ import annotations

import os

# Point everything at the test services before any project module reads settings.
os.environ.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleet_test")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ["FLEET_ENVIRONMENT"] = "test"
os.environ.pop("SENTRY_DSN", None)
os.environ.pop("FLEET_SENTRY_DSN", None)

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ops.standins.telegram import TelegramStandIn, telegram_stand_in
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool
from shared.core.settings import Settings, get_settings
from tests.support.processes import flush_redis

pytest_plugins = ["tests.support.booking_loop"]

TEST_DB = os.environ["DATABASE_URL"]
TEST_REDIS = os.environ["REDIS_URL"]


def _assert_test_database() -> None:
    name = get_settings().database_name
    if not name.endswith("_test"):
        raise pytest.UsageError(f"refusing to run tests against database {name!r}: its name must end in _test")


@pytest.fixture(scope="session")
def settings() -> Settings:
    _assert_test_database()
    return get_settings()


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> str:
    return upgrade(settings.database_conninfo)


def _domain_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
    ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def db(migrated: str, settings: Settings) -> Iterator[psycopg.Connection]:
    """A clean database (every domain table emptied) and an autocommit connection to inspect it."""
    with psycopg.connect(settings.database_conninfo, autocommit=True) as conn:
        tables = _domain_tables(conn)
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(table) for table in tables)
            )
        )
        yield conn
    close_process_pool()


@pytest.fixture
def clean_redis() -> str:
    flush_redis(TEST_REDIS)
    return TEST_REDIS


@pytest.fixture
def fleet_env(clean_redis: str, tmp_path: Path) -> dict[str, str]:
    """Environment for fleet child processes: the test services and a private state directory."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": TEST_DB,
            "REDIS_URL": clean_redis,
            "FLEET_ENVIRONMENT": "test",
            "FLEET_STATE_DIR": str(tmp_path / "state"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def telegram() -> Iterator[TelegramStandIn]:
    """A Bot API stand-in, and this process's settings pointing the fleet's alerts at it."""
    with telegram_stand_in() as stand_in:
        os.environ.update(stand_in.env())
        get_settings.cache_clear()
        try:
            yield stand_in
        finally:
            for name in stand_in.env():
                os.environ.pop(name, None)
            get_settings.cache_clear()


@pytest.fixture
def recorded_events(settings: Settings) -> Iterator[list[dict]]:
    """Sentry initialised as a worker would be, with events kept in memory instead of sent."""
    import sentry_sdk

    from shared.observability.sentry import init_sentry
    from tests.support.sentry_recording import RecordingTransport

    RecordingTransport.captured = []
    init_sentry(settings, component="test-component", transport=RecordingTransport)
    yield RecordingTransport.captured
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to a disabled client
