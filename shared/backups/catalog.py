"""What a backup asks the server itself (version, tables and their rows) and the databases a restore creates
or drops: cluster administration, not a table of ours, so it lives beside the backups rather than in a
repository."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def server_major(conn: psycopg.Connection) -> tuple[int, str]:
    row = conn.execute("SELECT current_setting('server_version_num')::int, current_setting('server_version')")
    number, text = row.fetchone()  # type: ignore[misc]
    return number // 10000, text


def export_snapshot(conn: psycopg.Connection) -> str:
    """A snapshot id pg_dump can dump from; valid while `conn`'s transaction stays open."""
    return conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    """Rows of every table in the public schema, as this connection's snapshot sees them."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
    ]
    return {
        table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]  # type: ignore[index]
        for table in tables
    }


def admin_connection(conninfo: str) -> psycopg.Connection:
    return psycopg.connect(make_conninfo(conninfo, dbname="postgres"), autocommit=True)


def has_tables(conninfo: str, dbname: str) -> bool | None:
    """Whether the database holds any table; None when it does not exist."""
    with admin_connection(conninfo) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            return None
    with psycopg.connect(make_conninfo(conninfo, dbname=dbname)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    return bool(row and row[0])


def create_database(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin: psycopg.Connection, name: str) -> None:
    """Drop it even while sessions are connected (they are ended)."""
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
