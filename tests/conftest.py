"""Test fixtures over real services: a dedicated PostgreSQL database and Redis db, cleaned per test."""

from __future__ import annotations

import copy
import os

from tests.support.test_services import own_database_url, own_redis_url

# Point everything at this test process's own services before any project module reads settings.
os.environ["DATABASE_URL"] = own_database_url(
    os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleet_test")
)
os.environ["REDIS_URL"] = own_redis_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"))
os.environ["FLEET_ENVIRONMENT"] = "test"
os.environ.pop("SENTRY_DSN", None)
os.environ.pop("FLEET_SENTRY_DSN", None)

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ops.standins.gateway import GatewayStandIn, gateway_stand_in
from ops.standins.telegram import TelegramStandIn, telegram_stand_in
from ops.standins.yclients import Salon, YClientsStandIn, yclients_stand_in
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import Settings, get_settings
from shared.observability.query_metrics import query_metrics
from tests.support.conversation import salon_answering_at_once
from tests.support.processes import flush_redis
from tests.support.seed import seed_salon

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
def salon(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The seed salon written (tests/support/seed.py), this process's pool open for the repositories, and the
    query counters zeroed; yields the inspecting connection."""
    open_process_pool(role="test", max_size=4, wait=True)
    seed_salon()
    query_metrics().reset()
    yield db
    close_process_pool()


@pytest.fixture
def answering_salon(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The seed salon with a week of working hours, answering in this process with no burst window."""
    with salon_answering_at_once():
        yield db


@pytest.fixture
def gateway() -> Iterator[GatewayStandIn]:
    """The WhatsApp gateway stand-in: what the fleet sends to each chat, over real HTTP."""
    with gateway_stand_in() as stand_in:
        yield stand_in


@pytest.fixture
def inbound_env(salon: psycopg.Connection, fleet_env: dict[str, str], gateway: GatewayStandIn) -> dict[str, str]:
    """Fleet processes' environment for answering the seed salon's chats through the gateway stand-in."""
    return {
        **fleet_env,
        "FLEET_GATEWAY__SEND_URL": gateway.url,
        "FLEET_GATEWAY__RETRY_BASE_SECONDS": "0.2",
        "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0.1",
    }


@pytest.fixture
def api_salon(generated_salon: Salon) -> Salon:
    """A fresh copy of the module's `generated_salon` per test, so a test may change what the API returns."""
    return copy.deepcopy(generated_salon)


@pytest.fixture
def stand_in(api_salon: Salon, db: psycopg.Connection, clean_redis: str) -> Iterator[YClientsStandIn]:
    """The YClients stand-in serving `api_salon`, with this process's pool open for the sync to write."""
    open_process_pool(role="test", max_size=3, wait=True)
    with yclients_stand_in(api_salon, per_second=1000, per_minute=100_000) as server:
        yield server
    close_process_pool()


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
