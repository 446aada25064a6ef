"""Alembic environment: one connection from settings, migrations serialised by an advisory lock."""

from __future__ import annotations

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool, text

from shared.core.settings import get_settings

# Any constant works; it only has to be the same for every process that migrates this database.
MIGRATION_LOCK_ID = 7_432_001


def run_migrations_online() -> None:
    conninfo = context.config.attributes.get("conninfo") or get_settings().session_conninfo
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
        try:
            context.configure(connection=connection, transaction_per_migration=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `fleet migrate`")
run_migrations_online()
