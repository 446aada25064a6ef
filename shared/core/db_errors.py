"""Typed errors of the query runner: callers decide retry or give-up from the type, never from driver internals.

Messages carry the table, the operation, the constraint and the SQLSTATE, never row values: the driver's
DETAIL line repeats the offending values (phones, names), so it is kept off the exception chain. The data
layer's own errors (validation, not found) derive from `DataLayerError` too (shared/data/errors.py, which
also re-exports these, so callers above take every data-layer error from one module).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import sentry_sdk
from psycopg import errors as pg
from psycopg_pool import PoolTimeout

from shared.core.failure import FleetError

log = logging.getLogger(__name__)


class DataLayerError(FleetError):
    """Base of every error the query runner and the data layer raise."""

    def __init__(self, message: str, *, table: str | None = None, operation: str | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.operation = operation


class DatabaseError(DataLayerError):
    """An error PostgreSQL (or the pool) raised, translated."""

    driver_error: BaseException | None = None

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        operation: str | None = None,
        sqlstate: str | None = None,
        constraint: str | None = None,
    ) -> None:
        super().__init__(message, table=table, operation=operation)
        self.sqlstate = sqlstate
        self.constraint = constraint


class ConflictError(DatabaseError):
    """A unique or exclusion constraint refused the row."""


class ForeignKeyError(DatabaseError):
    """The row points at something that does not exist (or is still pointed at)."""


class ConstraintError(DatabaseError):
    """A CHECK or NOT NULL constraint refused the row: bad data that validation should have caught."""


class TransientError(DatabaseError):
    """Connection lost, serialization failure, deadlock, pool timeout: safe to retry."""

    retryable = True


class PermanentError(DatabaseError):
    """Any other database error: retrying will not help."""


TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection lost, server shutting down, cannot connect
    pg.SerializationFailure,
    pg.DeadlockDetected,
    pg.LockNotAvailable,
    pg.QueryCanceled,  # statement_timeout under load
    pg.AdminShutdown,
    pg.CannotConnectNow,
    pg.TooManyConnections,
    PoolTimeout,
)


def translate(exc: BaseException, *, table: str | None, operation: str | None) -> DatabaseError:
    """Map a driver or pool exception to the typed error the caller should see."""
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None)
    constraint = getattr(diag, "constraint_name", None) if diag is not None else None
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    where = f"{operation or 'query'} on {table or '?'}"
    summary = primary or type(exc).__name__
    kw = {"table": table, "operation": operation, "sqlstate": sqlstate, "constraint": constraint}
    if isinstance(exc, pg.UniqueViolation | pg.ExclusionViolation):
        return ConflictError(f"{where}: conflict on {constraint}", **kw)
    if isinstance(exc, pg.ForeignKeyViolation):
        return ForeignKeyError(f"{where}: foreign key {constraint} violated", **kw)
    if isinstance(exc, pg.CheckViolation | pg.NotNullViolation):
        column = getattr(diag, "column_name", None) if diag is not None else None
        return ConstraintError(f"{where}: {summary} ({constraint or column})", **kw)
    if isinstance(exc, PoolTimeout):
        return TransientError(f"{where}: no free connection in the pool ({exc})", **kw)
    if isinstance(exc, TRANSIENT_TYPES):
        return TransientError(f"{where}: {summary} [{sqlstate or type(exc).__name__}]", **kw)
    return PermanentError(f"{where}: {summary} [{sqlstate or type(exc).__name__}]", **kw)


def report(error: DatabaseError) -> None:
    """Send to Sentry with tags; the same object raised on to Celery is dropped by Sentry's dedupe."""
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("table", error.table or "unknown")
        scope.set_tag("operation", error.operation or "unknown")
        scope.set_tag("error_kind", type(error).__name__)
        if error.sqlstate:
            scope.set_tag("sqlstate", error.sqlstate)
        scope.set_level("warning" if isinstance(error, ConflictError | TransientError) else "error")
        sentry_sdk.capture_exception(error)


@contextmanager
def translated_errors(*, table: str | None, operation: str | None) -> Iterator[None]:
    """Turn driver exceptions raised inside into typed errors, reported once."""
    try:
        yield
    except DataLayerError:
        raise
    except (psycopg.Error, PoolTimeout) as exc:
        error = translate(exc, table=table, operation=operation)
        error.driver_error = exc  # for local debugging; deliberately not chained (DETAIL holds values)
        log.warning("database error: %s", error)
        report(error)
        raise error from None
