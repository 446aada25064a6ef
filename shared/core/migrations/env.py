"""Alembic environment: one connection from settings, migrations serialised by an advisory lock."""

from __future__ import annotations

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool

from shared.core.locks import LockClass, session_lock, session_unlock
from shared.core.settings import get_settings

SCHEMA = "schema"  # the lock's key: one schema per database


def run_migrations_online() -> None:
    conninfo = context.config.attributes.get("conninfo") or get_settings().session_conninfo
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo), poolclass=pool.NullPool)
    with engine.connect() as connection:
        raw = connection.connection.driver_connection  # the psycopg connection under SQLAlchemy's
        session_lock(LockClass.MIGRATE, SCHEMA, table="alembic_version", conn=raw)
        raw.commit()
        try:
            context.configure(connection=connection, transaction_per_migration=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            session_unlock(LockClass.MIGRATE, SCHEMA, table="alembic_version", conn=raw)
            raw.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `fleet migrate`")
run_migrations_online()
