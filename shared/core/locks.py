"""PostgreSQL advisory locks: every lock class the fleet takes, declared once, and the statements that take them.

A lock is a (class, key) pair: the class says what is being serialised, the key (hashed text) which one.
Transaction locks end with their transaction; a session lock is held across transactions on one connection
and must be released on that connection. On a `pipelined` connection a lock leaves with the next statement
that is read (a lock that cannot be had fails that reading).
"""

from __future__ import annotations

from enum import IntEnum

from shared.core.db import Connection, run, send


class LockClass(IntEnum):
    STORE_CHAT = 1  # assigning the next sequence number of one chat
    ANSWER_CHAT = 2  # answering one chat
    FILE_SPOOL = 3  # one filer of the dead-letter spool at a time
    CRM_BOOKING = 4  # one CRM operation of one booking at a time
    MIGRATE = 5  # one migrating process per database (shared/core/migrations/env.py)


def transaction_lock(lock: LockClass, key: str, *, table: str, conn: Connection | None = None) -> None:
    """Wait for the lock; it is released when the current transaction ends."""
    query, params = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (int(lock), key)
    if conn is None:
        run(query, params, table=table, operation="lock")
    else:
        send(query, params, table=table, operation="lock", conn=conn)


def session_lock(lock: LockClass, key: str, *, table: str, conn: Connection) -> None:
    """Wait for the lock on this connection, across its transactions, until `session_unlock`."""
    send("SELECT pg_advisory_lock(%s, hashtext(%s))", (int(lock), key), table=table, operation="lock", conn=conn)


def session_unlock(lock: LockClass, key: str, *, table: str, conn: Connection) -> None:
    send("SELECT pg_advisory_unlock(%s, hashtext(%s))", (int(lock), key), table=table, operation="unlock", conn=conn)


def limit_lock_wait(milliseconds: float, *, conn: Connection) -> None:
    """For the rest of this transaction, a lock that cannot be had within the limit raises instead of waiting."""
    send(f"SET LOCAL lock_timeout = {int(milliseconds)}", table=None, operation="set", conn=conn)
