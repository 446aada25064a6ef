"""Soft deletion by the sync: the live rows of an entity that YClients no longer lists, counted first (so the
sync can refuse a mass delete) and then marked `deleted_at`, never removed.

The sync describes the rows in data (a repository, a filter, the upstream key and the keys it saw); the
statements are built here from the repository's declared columns, like every other statement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from shared.core.db import run
from shared.data.repository import Repository


@dataclass(frozen=True)
class Vanished:
    """Live rows of one table that the answer no longer lists, judged before any is marked deleted.

    `scope` is a repository filter (`column` or `column__op`) naming the rows the answer covers; `key` the
    columns that identify a row upstream; `seen` the keys the answer listed: values for a one-column key,
    tuples (in `key` order) for a longer one.
    """

    repository: Repository
    scope: Mapping[str, Any]
    key: tuple[str, ...]
    seen: Sequence[Any]

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError(f"a vanished-rows judgement of {self.table} needs the upstream key's columns")

    @property
    def table(self) -> str:
        return self.repository.table

    def counts(self) -> tuple[int, int]:
        """(live rows in scope, those of them the answer did not list)."""
        live, live_params = self._live()
        gone, gone_params = self._gone()
        query = sql.SQL("SELECT count(*) AS live, count(*) FILTER (WHERE {}) AS gone FROM {}{}").format(
            gone, sql.Identifier(self.table), live
        )
        row = run(query, [*gone_params, *live_params], table=self.table, operation="select")[0]
        return row["live"], row["gone"]

    def mark(self) -> int:
        """Mark the rows the answer did not list deleted; returns how many."""
        live, live_params = self._live()
        gone, gone_params = self._gone()
        query = sql.SQL("UPDATE {} SET {} = now(){} AND {} RETURNING 1").format(
            sql.Identifier(self.table), self.repository._column("deleted_at"), live, gone
        )
        return len(run(query, [*live_params, *gone_params], table=self.table, operation="update"))

    def _live(self) -> tuple[sql.Composable, list[Any]]:
        """The WHERE clause of the rows in scope that are not deleted and carry an upstream key."""
        filters = {**self.scope, "deleted_at__is_null": True, **{f"{name}__is_null": False for name in self.key}}
        return self.repository._where(filters)

    def _gone(self) -> tuple[sql.Composable, list[Any]]:
        """The condition "not listed"; a longer key is compared as its columns' text joined by ':' (Python's
        `str` of an int or a date is what PostgreSQL prints for it under the default ISO DateStyle)."""
        columns = [self.repository._column(name) for name in self.key]
        if len(columns) == 1:
            return sql.SQL("NOT ({} = ANY(%s))").format(columns[0]), [list(self.seen)]
        joined = sql.SQL(" || ':' || ").join(sql.SQL("{}::text").format(column) for column in columns)
        listed = [":".join(str(value) for value in values) for values in self.seen]
        return sql.SQL("NOT ({} = ANY(%s))").format(joined), [listed]
