"""Soft deletion by the sync: the live rows of an entity that YClients no longer lists, counted first (so the
sync can refuse a mass delete) and then marked `deleted_at`, never removed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.core.db import run


@dataclass(frozen=True)
class Vanished:
    """Live rows of one entity that the answer no longer lists, judged before any is marked deleted."""

    table: str
    where: str  # the live rows of this entity in scope
    where_params: tuple[Any, ...]
    gone: str  # the subset the answer did not list
    gone_params: tuple[Any, ...]

    def counts(self) -> tuple[int, int]:
        row = run(
            f"SELECT count(*) AS live, count(*) FILTER (WHERE {self.gone}) AS gone FROM {self.table}"
            f" WHERE {self.where}",
            (*self.gone_params, *self.where_params),
            table=self.table,
            operation="select",
        )[0]
        return row["live"], row["gone"]

    def mark(self) -> int:
        rows = run(
            f"UPDATE {self.table} SET deleted_at = now() WHERE {self.where} AND {self.gone} RETURNING 1",
            (*self.where_params, *self.gone_params),
            table=self.table,
            operation="update",
        )
        return len(rows)


def by_key(
    table: str, company_id: int, key: str, seen: list[int], extra: str = "", params: tuple[Any, ...] = ()
) -> Vanished:
    return Vanished(
        table,
        f"company_id = %s AND deleted_at IS NULL AND {key} IS NOT NULL{extra}",
        (company_id, *params),
        f"NOT ({key} = ANY(%s))",
        (seen,),
    )
