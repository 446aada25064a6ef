"""The two upsert engines' SQL: a JSON batch upserted in one statement that returns every row (small and
medium inputs), and COPY into a temporary table merged by one statement (large inputs). Both skip rows whose
values are unchanged, so a repeated sync rewrites nothing. Identifiers come checked from the repository."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from shared.core.db import (
    BinaryCopyData,
    Connection,
    binary_copy_data,
    connection,
    copy_binary,
    execute,
    overlapped,
    run,
    transaction,
)

Row = dict[str, Any]
_oids: dict[str, dict[str, int]] = {}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def json_rows(rows: list[Row], names: Sequence[str]) -> Jsonb:
    """One batch as the JSON array `upsert_statement` takes."""
    return Jsonb([{name: row[name] for name in names} for row in rows], dumps=_dumps)


def conflict_action(update_cols: Sequence[str]) -> sql.Composable:
    if not update_cols:
        return sql.SQL("DO NOTHING")
    sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in update_cols)
    changed = sql.SQL("({}) IS DISTINCT FROM ({})").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in update_cols),
        sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in update_cols),
    )
    return sql.SQL("DO UPDATE SET {} WHERE {}").format(sets, changed)


def upsert_statement(
    table_name: str, names: Sequence[str], conflict_cols: Sequence[str], update_cols: Sequence[str]
) -> sql.Composable:
    """INSERT … ON CONFLICT DO UPDATE that skips unchanged rows, then returns every input row.

    Rows arrive as one JSON array cast to the table's row type, so PostgreSQL converts each column to
    its own type. The outer SELECT adds the rows the upsert left alone (same values), so the caller
    always gets one row per input key.
    """
    table = sql.Identifier(table_name)
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    keys = sql.SQL(", ").join(map(sql.Identifier, conflict_cols))
    action = conflict_action(update_cols)
    key_match = sql.SQL(" AND ").join(sql.SQL("u.{0} = i.{0}").format(sql.Identifier(c)) for c in conflict_cols)
    join_on = sql.SQL(" AND ").join(sql.SQL("t.{0} = i.{0}").format(sql.Identifier(c)) for c in conflict_cols)
    return sql.SQL(
        "WITH i AS (SELECT {cols} FROM jsonb_populate_recordset(NULL::{table}, %(rows)s)),"
        " u AS (INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM i ON CONFLICT ({keys}) {action}"
        " RETURNING t.*)"
        " SELECT u.*, true AS _changed FROM u"
        " UNION ALL"
        " SELECT t.*, false AS _changed FROM {table} t JOIN i ON {join_on}"
        " WHERE NOT EXISTS (SELECT 1 FROM u WHERE {key_match})"
    ).format(cols=cols, table=table, keys=keys, action=action, join_on=join_on, key_match=key_match)


@lru_cache(maxsize=512)
def upsert_text(
    table_name: str, names: tuple[str, ...], conflict_cols: tuple[str, ...], update_cols: tuple[str, ...]
) -> str:
    """`upsert_statement` rendered once per table and column lists (the same few for every inbound message)."""
    return upsert_statement(table_name, names, conflict_cols, update_cols).as_string()


def merge_statement(
    table_name: str,
    staging: sql.Identifier,
    names: Sequence[str],
    conflict_cols: Sequence[str],
    update_cols: Sequence[str],
) -> sql.Composable:
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    keys = sql.SQL(", ").join(map(sql.Identifier, conflict_cols))
    return sql.SQL(
        "INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM {staging} ON CONFLICT ({keys}) {action}"
    ).format(
        table=sql.Identifier(table_name),
        cols=cols,
        staging=staging,
        keys=keys,
        action=conflict_action(update_cols),
    )


def column_oids(table: str, conn: Connection) -> dict[str, int]:
    """Each column's type OID, read once per process, so COPY can send binary rows."""
    if table not in _oids:
        rows = run(
            "SELECT attname, atttypid::int AS oid FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (table,),
            table=table,
            operation="select",
            conn=conn,
        )
        _oids[table] = {row["attname"]: row["oid"] for row in rows}
    return _oids[table]


def copy_data(
    table: str, rows: list[Row], names: Sequence[str], json_columns: frozenset[str], conn: Connection | None
) -> BinaryCopyData:
    """The rows' `names` columns as binary COPY data, formatted now (with the connection's adapters; the
    columns' types read once per process)."""
    with connection(conn) as active:
        types = column_oids(table, active)
        return binary_copy_data(_copy_values(rows, names, json_columns), [types[name] for name in names], active)


def _copy_values(rows: list[Row], names: Sequence[str], json_columns: frozenset[str]) -> list[Sequence[Any]]:
    """Each row's values in `names` order, JSON columns wrapped, as COPY takes them."""
    json_indexes = [index for index, name in enumerate(names) if name in json_columns]
    if not json_indexes:  # picked in C (a sync page: 100,000 rows, no JSON column)
        return list(map(itemgetter(*names), rows)) if len(names) > 1 else [(row[names[0]],) for row in rows]
    picked = []
    for row in rows:
        values = [row[name] for name in names]
        for index in json_indexes:
            if values[index] is not None:
                values[index] = Jsonb(values[index])
        picked.append(values)
    return picked


def matching_hashes_statement(
    table_name: str, listed: Sequence[str], fixed: Sequence[str], hash_column: str
) -> sql.Composable:
    """The 1-based positions of the given keys whose stored hash equals the given one, as one array.

    `listed` key columns come as arrays (`%(k0)s`, ...), one element a row, beside the hashes (`%(hashes)s`,
    `%(count)s` of them); `fixed` ones as one value for every row (`%(f0)s`, ...: a page's company). The arrays
    are unnested in the select list, which streams (an unnest in FROM stores its rows first); the LATERAL
    probe keeps the plan to one index lookup a row, where a hash join would read the whole table.
    """
    given = [sql.SQL("unnest(%({0})s::int8[]) AS {0}").format(sql.SQL(f"k{n}")) for n in range(len(listed))]
    match = [sql.SQL("t.{} = i.{}").format(sql.Identifier(c), sql.SQL(f"k{n}")) for n, c in enumerate(listed)]
    match += [sql.SQL("t.{} = %({})s").format(sql.Identifier(c), sql.SQL(f"f{n}")) for n, c in enumerate(fixed)]
    match.append(sql.SQL("t.{} = i.h").format(sql.Identifier(hash_column)))
    return sql.SQL(
        "SELECT coalesce(array_agg(i.n), '{{}}') AS positions FROM (SELECT generate_series(1, %(count)s) AS n,"
        " {given}unnest(%(hashes)s::int8[]) AS h) i"
        " CROSS JOIN LATERAL (SELECT 1 FROM {table} t WHERE {match} LIMIT 1) stored"
    ).format(
        given=sql.SQL("").join(part + sql.SQL(", ") for part in given),
        table=sql.Identifier(table_name),
        match=sql.SQL(" AND ").join(match),
    )


@lru_cache(maxsize=64)
def matching_hashes_text(table_name: str, listed: tuple[str, ...], fixed: tuple[str, ...], hash_column: str) -> str:
    return matching_hashes_statement(table_name, listed, fixed, hash_column).as_string()


def int_array(values: Sequence[int]) -> str:
    """An int8[] literal: a page's 100,000 keys joined in C, where adapting them one by one cost 60 ms."""
    return "{" + ",".join(map(str, values)) + "}"


@dataclass(frozen=True)
class CopyUpsert:
    """A copy-upsert whose client-side part is done (rows checked, the last of each key kept, grouped by the
    columns they name, formatted as COPY data): `run` is the database's part alone."""

    table: str
    conflict_cols: tuple[str, ...]
    groups: list[tuple[tuple[str, ...], list[str], BinaryCopyData]]  # (names, update columns, COPY data)

    def run(self, conn: Connection | None, meanwhile: Callable[[], None] | None = None) -> int:
        """Every group merged; rows inserted or changed. `meanwhile` is done while the server runs the first
        merge, or at once when there is nothing to merge."""
        changed = 0
        for names, update_cols, data in self.groups:
            changed += copy_merge(self.table, names, self.conflict_cols, update_cols, data, conn, meanwhile)
            meanwhile = None
        if meanwhile is not None:
            meanwhile()
        return changed


def copy_merge(
    table: str,
    names: Sequence[str],
    conflict_cols: Sequence[str],
    update_cols: Sequence[str],
    data: BinaryCopyData,
    conn: Connection | None,
    meanwhile: Callable[[], None] | None = None,
) -> int:
    """COPY the rows (`copy_data`) into a temporary table shaped like `table`, merge them in one statement,
    drop the temporary table; returns how many rows were inserted or changed. `meanwhile` is done while the
    server merges (`overlapped`)."""
    staging = sql.Identifier(f"incoming_{table}")
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    with transaction(conn) as tx:
        run(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                staging, cols, sql.Identifier(table)
            ),
            table=table,
            operation="create",
            conn=tx,
        )
        copy_binary(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(staging, cols), data, table=table, conn=tx
        )
        merge = merge_statement(table, staging, names, conflict_cols, update_cols)
        if meanwhile is None:
            changed = execute(merge, table=table, operation="upsert", conn=tx)
        else:
            with overlapped(merge, table=table, operation="upsert", conn=tx) as result:
                meanwhile()
            changed = result.rowcount
        run(sql.SQL("DROP TABLE {}").format(staging), table=table, operation="drop", conn=tx)
    return changed
