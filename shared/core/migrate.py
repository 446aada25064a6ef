"""Apply the schema with Alembic, creating the database first when it does not exist yet."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(conninfo: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["conninfo"] = conninfo
    return config


def ensure_database(conninfo: str) -> bool:
    """Create the database named in `conninfo` if it is missing; True when it was created."""
    dbname = conninfo_to_dict(conninfo).get("dbname")
    if not dbname:
        raise ValueError("the database URL names no database")
    admin = make_conninfo(conninfo, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(dbname))))
        log.info("created database %s", dbname)
        return True


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config(""))
    head = script.get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(conninfo: str) -> str | None:
    with psycopg.connect(conninfo) as conn:
        exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None


def upgrade(conninfo: str, *, create_database: bool = True) -> str:
    """Bring the database to the newest revision; safe to run any number of times."""
    if create_database:
        ensure_database(conninfo)
    command.upgrade(alembic_config(conninfo), "head")
    revision = current_revision(conninfo)
    assert revision == head_revision(), f"database at {revision}, expected {head_revision()}"
    return revision
