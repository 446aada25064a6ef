"""Typed data-layer errors: callers decide retry or give-up from the type, never from driver internals.

The database errors are raised by the query runner below this layer (shared/core/db_errors.py) and are
re-exported here: callers take every data-layer error from this one module. This module adds the data layer's
own: a row that is not there, and input refused by validation before anything was sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError as PydanticValidationError

from shared.core.db_errors import (
    ConflictError,
    ConstraintError,
    DatabaseError,
    DataLayerError,
    ForeignKeyError,
    PermanentError,
    TransientError,
)

__all__ = [
    "ConflictError",
    "ConstraintError",
    "DataLayerError",
    "DatabaseError",
    "ForeignKeyError",
    "NotFoundError",
    "PermanentError",
    "TransientError",
    "UnknownIdentifierError",
    "ValidationFailedError",
    "pydantic_errors",
]


class NotFoundError(DataLayerError):
    """The row the caller asked for does not exist."""


class ValidationFailedError(DataLayerError):
    """Input failed validation; `errors` holds (field, problem) pairs. Nothing was written."""

    def __init__(self, entity: str, errors: Sequence[tuple[str, str]], **kw: str | None) -> None:
        self.entity = entity
        self.errors = list(errors)
        details = "; ".join(f"{field}: {problem}" for field, problem in self.errors)
        super().__init__(f"invalid {entity}: {details}", **kw)

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.errors]


class UnknownIdentifierError(ValidationFailedError):
    """A table, column or operator name that the repository does not know (never sent to the database)."""


def pydantic_errors(exc: PydanticValidationError) -> list[tuple[str, str]]:
    """(field, problem) pairs from pydantic, without echoing the rejected input."""
    return [
        (".".join(str(part) for part in err["loc"]) or "row", err["msg"].removeprefix("Value error, "))
        for err in exc.errors()
    ]
