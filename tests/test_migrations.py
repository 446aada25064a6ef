"""Migrations: from an empty database to the full schema, and a re-run changes nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from shared.core.migrate import current_revision, head_revision, upgrade
from shared.core.settings import Settings

DOMAIN_TABLES = {
    "companies",
    "service_categories",
    "services",
    "staff",
    "staff_schedules",
    "clients",
    "bookings",
    "dialog_contexts",
    "messages",
    "outbox",
    "dead_letters",
    "sync_runs",
    "backups",
    "health_checks",
    "whatsapp_auth",
    "whatsapp_keys",
}


@pytest.fixture
def scratch_db(settings: Settings) -> Iterator[str]:
    name = "fleet_migrations_test"
    admin = make_conninfo(settings.database_conninfo, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    yield make_conninfo(settings.database_conninfo, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _schema_dump(conninfo: str) -> str:
    dump = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "-d", conninfo], check=True, capture_output=True, text=True
    ).stdout
    # Newer pg_dump brackets the script with a random \restrict key; it is not part of the schema.
    return "\n".join(line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def test_upgrade_from_nothing_creates_the_database_and_every_table(scratch_db: str) -> None:
    assert upgrade(scratch_db) == head_revision()
    with psycopg.connect(scratch_db) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert tables >= DOMAIN_TABLES
    assert current_revision(scratch_db) == head_revision()


def test_running_migrations_again_changes_nothing(scratch_db: str) -> None:
    upgrade(scratch_db)
    before = _schema_dump(scratch_db)
    upgrade(scratch_db)
    assert _schema_dump(scratch_db) == before


def test_schema_enforces_the_idempotency_keys(scratch_db: str) -> None:
    upgrade(scratch_db)
    with psycopg.connect(scratch_db) as conn:
        conn.execute("INSERT INTO companies (id, title) VALUES (962302, 'Salon')")
        insert = (
            "INSERT INTO messages (company_id, chat_id, gateway_message_id, chat_seq, body, sent_at)"
            " VALUES (962302, '+79110000000', 'wamid-1', %s, 'hi', now())"
        )
        conn.execute(insert, (1,))
        with pytest.raises(psycopg.errors.UniqueViolation, match="gateway_message_id"):
            conn.execute(insert, (2,))
