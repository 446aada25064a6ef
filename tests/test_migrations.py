"""Migrations: from an empty database to the full schema, a re-run changes nothing, and a revision that
rewrites rows (0010, the work rows' one vocabulary) keeps them through its upgrade and its downgrade."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from psycopg import sql
from psycopg.conninfo import make_conninfo

from shared.core.migrate import alembic_config, current_revision, ensure_database, head_revision, upgrade
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
    name = f"{settings.database_name.removesuffix('_test')}_migrations_test"  # beside this process's own database
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


OLD_ROWS = """
INSERT INTO companies (id, title) VALUES (962302, 'Salon');
INSERT INTO staff (company_id, id, name) VALUES (962302, 1, 'Anna');
INSERT INTO bookings (id, company_id, staff_id, starts_at, ends_at)
    VALUES (1, 962302, 1, now(), now() + interval '1 hour');
INSERT INTO outbox (id, company_id, chat_id, idempotency_key, body, status, sent_at) VALUES
    (1, 962302, '+79110000001', 'r1', 'a', 'pending', NULL),
    (2, 962302, '+79110000001', 'r2', 'b', 'sent', now() - interval '1 hour'),
    (3, 962302, '+79110000001', 'r3', 'c', 'failed', NULL);
INSERT INTO crm_operations (id, company_id, booking_id, kind, status, outcome) VALUES
    (1, 962302, 1, 'create', 'done', 'record 5'),
    (2, 962302, 1, 'reschedule', 'refused', 'slot taken: 433'),
    (3, 962302, 1, 'cancel', 'failed', 'YClients was down'),
    (4, 962302, 1, 'confirm', 'pending', NULL);
INSERT INTO alerts (id, key, kind, text, status, sent_at) VALUES
    (1, 'k1', 'health', 'x', 'pending', NULL),
    (2, 'k2', 'health', 'y', 'sent', now()),
    (3, 'k3', 'health', 'z', 'given_up', NULL);
INSERT INTO yclients_webhook_events (id, event_key, company_id, resource, resource_id, action, payload,
                                     processed_at, error) VALUES
    (1, 'e1', 962302, 'record', 5, 'update', '{}', NULL, NULL),
    (2, 'e2', 962302, 'record', 5, 'update', '{}', now(), NULL),
    (3, 'e3', 962302, 'client', 6, 'update', '{}', now(), 'YClientsError: 500');
"""

OLD_STATUSES = {
    "outbox": [(1, "pending"), (2, "sent"), (3, "failed")],
    "crm_operations": [(1, "done"), (2, "refused"), (3, "failed"), (4, "pending")],
    "alerts": [(1, "pending"), (2, "sent"), (3, "given_up")],
}


def _statuses(conn: psycopg.Connection, table: str) -> list[tuple[int, str]]:
    return conn.execute(sql.SQL("SELECT id, status FROM {} ORDER BY id").format(sql.Identifier(table))).fetchall()


def test_the_work_rows_revision_moves_every_row_to_one_vocabulary_and_back(scratch_db: str) -> None:
    config = alembic_config(scratch_db)
    ensure_database(scratch_db)
    command.upgrade(config, "0009")
    before = _schema_dump(scratch_db)
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(OLD_ROWS)

    command.upgrade(config, "0010")
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        assert _statuses(conn, "outbox") == [(1, "pending"), (2, "done"), (3, "failed")]
        assert conn.execute("SELECT bool_and(finished_at IS NOT NULL) FROM outbox WHERE id > 1").fetchone() == (True,)
        assert _statuses(conn, "crm_operations") == [(1, "done"), (2, "done"), (3, "failed"), (4, "pending")]
        outcomes = conn.execute("SELECT outcome FROM crm_operations ORDER BY id").fetchall()
        assert outcomes == [("record 5",), ("refused: slot taken: 433",), ("YClients was down",), (None,)]
        assert _statuses(conn, "alerts") == [(1, "pending"), (2, "done"), (3, "failed")]
        assert conn.execute("SELECT finished_at IS NOT NULL FROM alerts WHERE id = 3").fetchone() == (True,)
        events = conn.execute(
            "SELECT id, status, attempts, last_error, finished_at IS NOT NULL, next_attempt_at <= now()"
            " FROM yclients_webhook_events ORDER BY id"
        ).fetchall()
        assert events == [
            (1, "pending", 0, None, False, True),
            (2, "done", 1, None, True, True),
            (3, "failed", 1, "YClientsError: 500", True, True),
        ]
        for table in ("outbox", "crm_operations", "alerts", "yclients_webhook_events"):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(sql.SQL("UPDATE {} SET status = 'sent' WHERE id = 1").format(sql.Identifier(table)))

    command.downgrade(config, "0009")
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        for table, statuses in OLD_STATUSES.items():
            assert _statuses(conn, table) == statuses
        assert conn.execute("SELECT outcome FROM crm_operations WHERE id = 2").fetchone() == ("slot taken: 433",)
        sent = conn.execute(
            "SELECT id FROM outbox WHERE sent_at IS NOT NULL UNION ALL SELECT -id FROM alerts WHERE sent_at IS NOT NULL"
        ).fetchall()
        assert sorted(sent) == [(-2,), (2,)], "only what was sent has a sending time again"
        events = conn.execute(
            "SELECT id, processed_at IS NOT NULL, error FROM yclients_webhook_events ORDER BY id"
        ).fetchall()
        assert events == [(1, False, None), (2, True, None), (3, True, "YClientsError: 500")]
        conn.execute("TRUNCATE outbox, crm_operations, alerts, yclients_webhook_events, companies CASCADE")
    assert _schema_dump(scratch_db) == before, "the downgrade restores the schema exactly"


def test_the_webhook_doors_revision_keeps_ids_only_and_folds_waiting_duplicates(scratch_db: str) -> None:
    config = alembic_config(scratch_db)
    ensure_database(scratch_db)
    command.upgrade(config, "0010")
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO yclients_webhook_events (id, event_key, company_id, resource, resource_id, action, payload,
                                                 status, attempts) VALUES
                (1, 'e1', 962302, 'record', 5, 'create', '{"data": {"phone": "+79110000001"}}', 'pending', 0),
                (2, 'e2', 962302, 'record', 5, 'update', '{"data": {"name": "Анна"}}', 'pending', 0),
                (3, 'e3', 962302, 'record', 5, 'update', '{}', 'done', 1),
                (4, 'e4', 962302, 'client', 5, 'update', '{}', 'pending', 0);
            """
        )

    command.upgrade(config, "0011")
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, status, repeats, row_to_json(e)::text FROM yclients_webhook_events e ORDER BY id"
        ).fetchall()
        assert [row[:3] for row in rows] == [(1, "pending", 1), (3, "done", 0), (4, "pending", 0)]
        assert not any("+7911" in row[3] or "Анна" in row[3] for row in rows), "the bodies are gone"
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO yclients_webhook_events (company_id, resource, resource_id, action)"
                " VALUES (962302, 'record', 5, 'update')"
            )
        conn.execute("INSERT INTO yclients_webhook_secrets (company_id, secret_hash) VALUES (962302, repeat('a', 64))")

    command.downgrade(config, "0010")
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        events = conn.execute("SELECT id, event_key, payload FROM yclients_webhook_events ORDER BY id").fetchall()
        assert events == [(1, "v11:1", {}), (3, "v11:3", {}), (4, "v11:4", {})]
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert "yclients_webhook_secrets" not in tables
    command.upgrade(config, "head")
