"""The base repository: safe query building over one table, validated writes, batched upserts (their SQL is
built in `upsert_sql`).

Identifiers are checked against the table's declared columns and quoted with `psycopg.sql`; values are
always parameters. A filter is `column` (equality) or `column__op`, e.g. `{"price_min__gte": 1000}`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any, ClassVar

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from shared.core.db import Connection, connection, overlapped, queue, run, transaction
from shared.core.storable import BIGINT_MAX
from shared.data import sync_hashes, upsert_sql
from shared.data.errors import NotFoundError, UnknownIdentifierError, ValidationFailedError, pydantic_errors

Row = dict[str, Any]


class UpsertResult(list[Row]):
    """Every upserted row, plus how many of them were inserted or changed (the rest were already current)."""

    changed: int = 0


Rejection = tuple[int, list[tuple[str, str]]]  # (input index, [(field, problem)])
MAX_BATCH = 500
VALIDATE_CHUNK = 200  # rows per pydantic call in validate_many; measured: 100-500 alike, a whole page slower

_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
OPERATORS = frozenset([*_COMPARISONS, "ilike", "in", "is_null"])


@cache
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    """One validator and serializer for a whole page of `model` rows, built once per model."""
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _key_columns(rows: Sequence[Mapping[str, Any]], conflict_cols: tuple[str, ...]) -> list[list[int]] | None:
    """Each key column's values, or None unless every one is a bigint: a page with a key the model might still
    turn into another ("7" into 7, a duplicate of another row) skips nothing."""
    try:
        columns = [[row[name] for row in rows] for name in conflict_cols]
    except KeyError:
        return None
    for values in columns:
        if not values or set(map(type, values)) != {int}:
            return None
        if not -BIGINT_MAX <= min(values) <= max(values) <= BIGINT_MAX:
            return None
    return columns


def _hash_candidates(columns: list[list[int]], hashes: Sequence[int | None]) -> list[int]:
    """Indexes of the rows `unchanged` may look up: hashed, and their key given once (the last row of a key
    wins a merge, while an earlier one may still need rejecting)."""
    return [
        index
        for index, (single, digest) in enumerate(zip(_given_once(columns), hashes, strict=True))
        if single and digest is not None
    ]


def _given_once(columns: list[list[int]]) -> list[bool]:
    """Whether each row's key occurs once; a column of one value (a page's company) leaves the key as it is."""
    varying = [values for values in columns if min(values) != max(values)] or columns[:1]
    keys: Sequence[Any] = varying[0] if len(varying) == 1 else list(zip(*varying, strict=True))
    if len(set(keys)) == len(keys):
        return [True] * len(keys)
    counts = Counter(keys)
    return [counts[key] == 1 for key in keys]


FilterShape = tuple[tuple[str, bool | None], ...]  # (spec, IS NULL or not for `__is_null`, else None)
SelectShape = tuple[FilterShape, tuple[str, ...], bool, bool]  # filters, order, LIMIT, OFFSET


def _split(spec: str) -> tuple[str, str]:
    """`price_min__gte` -> ("price_min", "gte"); a bare column is equality."""
    name, _, op = spec.partition("__")
    return name, op or "eq"


def _filter_shape(filters: Mapping[str, Any]) -> tuple[FilterShape, list[Any]]:
    """What a statement depends on (each spec, and the IS NULL choice, which is SQL), apart from the values
    bound as parameters, in filter order."""
    shape: list[tuple[str, bool | None]] = []
    params: list[Any] = []
    for spec, value in filters.items():
        op = _split(spec)[1]
        if op == "is_null":
            shape.append((spec, bool(value)))
        else:
            shape.append((spec, None))
            params.append(list(value) if op == "in" else value)
    return tuple(shape), params


@lru_cache(maxsize=1024)
def _select_text(repository: type[Repository], shape: SelectShape) -> str:
    """Rendered once per repository and query shape: composing and rendering a statement on every call cost
    more than a round trip to the database (the inbound path reads the same few shapes for every message)."""
    return repository()._select(shape)


class Repository:
    """Subclasses declare `table`, `columns`, `key` and the `model` every write is validated with."""

    table: ClassVar[str]
    columns: ClassVar[frozenset[str]]
    key: ClassVar[tuple[str, ...]] = ("id",)
    model: ClassVar[type[BaseModel] | None] = None
    json_columns: ClassVar[frozenset[str]] = frozenset()

    # ---- identifiers and filters -------------------------------------------------------------------
    def _column(self, name: str) -> sql.Identifier:
        if name not in self.columns:
            raise UnknownIdentifierError(
                self.table, [(name, f"unknown column of {self.table}")], table=self.table, operation="build"
            )
        return sql.Identifier(name)

    def _where(self, filters: Mapping[str, Any] | None) -> tuple[sql.Composable, list[Any]]:
        shape, params = _filter_shape(filters or {})
        return self._where_clause(shape), params

    def _where_clause(self, shape: FilterShape) -> sql.Composable:
        """The WHERE clause of a filter shape (see `_filter_shape`); unknown columns and operators are refused."""
        if not shape:
            return sql.SQL("")
        clauses: list[sql.Composable] = []
        for spec, is_null in shape:
            name, op = _split(spec)
            column = self._column(name)
            if op not in OPERATORS:
                raise UnknownIdentifierError(
                    self.table,
                    [(spec, f"unknown operator {op!r}; use one of {sorted(OPERATORS)}")],
                    table=self.table,
                    operation="build",
                )
            if op == "is_null":
                clauses.append(sql.SQL("{} IS NULL" if is_null else "{} IS NOT NULL").format(column))
            elif op == "in":
                clauses.append(sql.SQL("{} = ANY(%s)").format(column))
            elif op == "ilike":
                clauses.append(sql.SQL("{} ILIKE %s").format(column))
            else:
                clauses.append(sql.SQL("{} {} %s").format(column, sql.SQL(_COMPARISONS[op])))
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)

    def _order(self, order_by: Sequence[str] | None) -> sql.Composable:
        if not order_by:
            return sql.SQL("")
        parts = []
        for item in order_by:
            descending = item.startswith("-")
            parts.append(sql.SQL("{} DESC" if descending else "{} ASC").format(self._column(item.lstrip("-"))))
        return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(parts)

    def _adapt(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: Jsonb(value) if name in self.json_columns and value is not None else value
            for name, value in row.items()
        }

    # ---- validation --------------------------------------------------------------------------------
    def validate(self, row: Mapping[str, Any]) -> Row:
        """The row as the model accepts it; raises naming every bad field, before anything is written."""
        if self.model is None:
            return dict(row)
        try:
            valid = self.model.model_validate(dict(row))
        except PydanticValidationError as exc:
            raise ValidationFailedError(
                self.table, pydantic_errors(exc), table=self.table, operation="validate"
            ) from None
        return valid.model_dump(exclude_unset=True, by_alias=True)

    def validate_many(self, rows: Iterable[Mapping[str, Any]]) -> tuple[list[Row], list[Rejection]]:
        """(valid rows, [(index, errors)]) so a caller can keep the good rows and report the rest.

        Rows go through pydantic a chunk at a time (one call to validate, one to dump), not one call per row:
        the per-row Python round trips were a large share of a sync page's time. Chunks stay small because a
        chunk dumped while its models are fresh is faster than one pass over a whole page. A chunk holding a
        bad row is validated again row by row, so each row is rejected with exactly what `validate` says.
        """
        if self.model is None:
            return [dict(row) for row in rows], []
        given = [row if type(row) is dict else dict(row) for row in rows]
        adapter = _list_adapter(self.model)
        valid: list[Row] = []
        rejected: list[Rejection] = []
        for start in range(0, len(given), VALIDATE_CHUNK):
            chunk = given[start : start + VALIDATE_CHUNK]
            try:
                valid += adapter.dump_python(adapter.validate_python(chunk), exclude_unset=True, by_alias=True)
            except PydanticValidationError:  # a bad row in the chunk: row by row, each with its own errors
                for index, row in enumerate(chunk, start):
                    try:
                        valid.append(self.validate(row))
                    except ValidationFailedError as exc:
                        rejected.append((index, exc.errors))
        return valid, rejected

    # ---- reads -------------------------------------------------------------------------------------
    def find_many(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        conn: Connection | None = None,
    ) -> list[Row]:
        where, params = _filter_shape(filters or {})
        params += [int(n) for n in (limit, offset) if n is not None]
        shape = (where, tuple(order_by or ()), limit is not None, offset is not None)
        return run(_select_text(type(self), shape), params, table=self.table, operation="select", conn=conn)

    def _select(self, shape: SelectShape) -> str:
        """The statement for one shape of query; built (and its identifiers checked) once per shape."""
        where, order_by, limited, offset = shape
        query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(self.table))
        query += self._where_clause(where) + self._order(order_by)
        if limited:
            query += sql.SQL(" LIMIT %s")
        if offset:
            query += sql.SQL(" OFFSET %s")
        return query.as_string()

    def find_one(self, filters: Mapping[str, Any], *, conn: Connection | None = None) -> Row | None:
        rows = self.find_many(filters, limit=2, conn=conn)
        if len(rows) > 1:
            raise ValidationFailedError(
                self.table, [("filters", "matched more than one row")], table=self.table, operation="select"
            )
        return rows[0] if rows else None

    def get(self, filters: Mapping[str, Any], *, conn: Connection | None = None) -> Row:
        row = self.find_one(filters, conn=conn)
        if row is None:
            raise NotFoundError(f"no {self.table} row matches {sorted(filters)}", table=self.table, operation="select")
        return row

    def find_by_ids(
        self,
        ids: Iterable[Any],
        *,
        column: str = "id",
        scope: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> list[Row]:
        """Every row whose `column` is in `ids`, in one query (no N+1), optionally within a scope."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        return self.find_many({**(scope or {}), f"{column}__in": wanted}, conn=conn)

    # ---- writes ------------------------------------------------------------------------------------
    def insert(self, values: Mapping[str, Any], *, conn: Connection | None = None) -> Row:
        row = self.validate(values)
        names = list(row)
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
            sql.Identifier(self.table),
            sql.SQL(", ").join(self._column(name) for name in names),
            sql.SQL(", ").join(sql.Placeholder(name) for name in names),
        )
        return run(query, self._adapt(row), table=self.table, operation="insert", conn=conn)[0]

    def upsert(
        self,
        values: Mapping[str, Any],
        *,
        conflict: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
        conn: Connection | None = None,
    ) -> Row:
        """Insert, or update the existing row with the same conflict key; returns the row either way."""
        return self.bulk_upsert([values], conflict=conflict, update=update, conn=conn)[0]

    def upsert_later(
        self,
        values: Mapping[str, Any],
        *,
        conn: Connection,
        conflict: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
    ) -> Callable[[], Row]:
        """`upsert`, the row read when the returned function is called: on a `pipelined` connection the statement
        leaves with the next reading instead of making a round trip of its own."""
        conflict_cols = tuple(conflict or self.key)
        [(names, update_cols, group)] = self._upsert_groups([values], conflict_cols, update, False)
        statement = upsert_sql.upsert_text(self.table, tuple(names), conflict_cols, tuple(update_cols))
        payload = {"rows": upsert_sql.json_rows(group, names)}
        rows = queue(statement, payload, table=self.table, operation="upsert", conn=conn)

        def row() -> Row:
            written = rows()[0]
            written.pop("_changed")
            return written

        return row

    def bulk_upsert(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        conflict: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
        conn: Connection | None = None,
        validated: bool = False,
    ) -> UpsertResult:
        """Upsert any number of rows, one statement per batch of at most 500; returns every row.

        Rows are validated first (nothing is written if any is invalid). Within the input the last row for
        a key wins. Unchanged rows are not rewritten, so a repeated sync leaves the table untouched.
        """
        conflict_cols = tuple(conflict or self.key)
        result = UpsertResult()
        for names, update_cols, group in self._upsert_groups(rows, conflict_cols, update, validated):
            statement = upsert_sql.upsert_text(self.table, tuple(names), conflict_cols, tuple(update_cols))
            for start in range(0, len(group), MAX_BATCH):
                batch = group[start : start + MAX_BATCH]
                payload = upsert_sql.json_rows(batch, names)
                for row in run(statement, {"rows": payload}, table=self.table, operation="upsert", conn=conn):
                    result.changed += int(row.pop("_changed"))
                    result.append(row)
        return result

    def _upsert_groups(
        self,
        rows: Iterable[Mapping[str, Any]],
        conflict_cols: tuple[str, ...],
        update: Sequence[str] | None,
        validated: bool,
    ) -> list[tuple[tuple[str, ...], list[str], list[Row]]]:
        """Validated rows, last one per key, grouped by the columns they name: (names, update columns, rows).

        Rows that name different columns go in separate statements: a column a row leaves out keeps its
        stored value (or its default), it is never overwritten with NULL.
        """
        if validated:  # no copy: nothing below changes a row (the engines build their own payloads from it)
            valid = [row if type(row) is dict else dict(row) for row in rows]
        else:
            valid = [self.validate(row) for row in rows]
        # The checks go by the distinct column lists, not row by row: a sync page has 100,000 rows, few shapes.
        shapes = set(map(tuple, valid))
        for name in {name for shape in shapes for name in shape} | set(conflict_cols):
            self._column(name)
        missing = [name for name in conflict_cols if any(name not in shape for shape in shapes)]
        if missing:
            raise ValidationFailedError(
                self.table, [(name, "required for upsert") for name in missing], table=self.table, operation="upsert"
            )
        key = itemgetter(*conflict_cols)  # one column: the value itself, which dedupes as its 1-tuple would
        groups: dict[tuple[str, ...], list[Row]] = {}
        for row in {key(row): row for row in valid}.values():
            groups.setdefault(tuple(row), []).append(row)
        prepared = []
        for names, group in groups.items():
            update_cols = [c for c in (update if update is not None else names) if c not in conflict_cols]
            for name in update_cols:
                self._column(name)
            prepared.append((names, update_cols, group))
        return prepared

    def copy_upsert(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        conflict: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
        conn: Connection | None = None,
        validated: bool = False,
    ) -> int:
        """The bulk path for large inputs: COPY into a temporary table, then one merge; returns rows changed.

        Same rules as `bulk_upsert` (validated first, last row per key wins, unchanged rows not rewritten,
        a column a row leaves out is kept), without returning the rows. `validated=True` says the caller
        already passed every row through `validate`/`validate_many`, so it is not done twice.
        """
        with connection(conn) as active:
            prepared = self.prepare_copy_upsert(
                rows, conflict=conflict, update=update, validated=validated, conn=active
            )
            return prepared.run(active)

    def prepare_copy_upsert(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        conflict: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
        validated: bool = False,
        conn: Connection | None = None,
    ) -> upsert_sql.CopyUpsert:
        """`copy_upsert`'s own work done now (the rows grouped and formatted as COPY data, with the adapters of
        `conn` or of a connection borrowed for it), the database's left to the result's `run`: a caller can
        prepare the next rows while the server merges the last."""
        conflict_cols = tuple(conflict or self.key)
        groups = self._upsert_groups(rows, conflict_cols, update, validated)
        return upsert_sql.CopyUpsert(
            self.table,
            conflict_cols,
            [
                (names, cols, upsert_sql.copy_data(self.table, group, names, self.json_columns, conn))
                for names, cols, group in groups
            ],
        )

    def unchanged(
        self,
        rows: Sequence[Mapping[str, Any]],
        hashes: Sequence[int | None],
        *,
        conflict: Sequence[str] | None = None,
        conn: Connection | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> set[int]:
        """Indexes of `rows` (not yet validated) whose stored `sync_hash` equals theirs, read in one statement.

        Rows without a hash, and rows whose key is not a bigint or given twice, are never reported unchanged.
        `meanwhile` is done while the server looks, or at once when there is nothing to look up.
        """
        conflict_cols = tuple(conflict or self.key)
        for name in (*conflict_cols, sync_hashes.COLUMN):
            self._column(name)
        columns = _key_columns(rows, conflict_cols)
        wanted = _hash_candidates(columns, hashes) if columns is not None else []
        if columns is None or not wanted:
            if meanwhile is not None:
                meanwhile()
            return set()
        params: dict[str, Any] = {"count": len(wanted), "hashes": upsert_sql.int_array([hashes[i] for i in wanted])}
        listed: list[str] = []
        fixed: list[str] = []
        for name, values in zip(conflict_cols, columns, strict=True):
            chosen = [values[index] for index in wanted]
            if min(chosen) == max(chosen):  # one value for the page (its company): a parameter, not an array
                params[f"f{len(fixed)}"] = chosen[0]
                fixed.append(name)
            else:
                params[f"k{len(listed)}"] = upsert_sql.int_array(chosen)
                listed.append(name)
        statement = upsert_sql.matching_hashes_text(self.table, tuple(listed), tuple(fixed), sync_hashes.COLUMN)
        with transaction(conn) as tx:
            run("SET LOCAL jit = off", table=self.table, operation="set", conn=tx)  # compiling cost 0.1-0.2 s
            if meanwhile is None:
                found = run(statement, params, table=self.table, operation="select", conn=tx)
            else:
                with overlapped(
                    statement, params, table=self.table, operation="select", conn=tx, dict_rows=True
                ) as cur:
                    meanwhile()
                found = cur.fetchall()
        return {wanted[position - 1] for position in found[0]["positions"]}

    def keys_given_once(
        self, rows: Sequence[Mapping[str, Any]], *, conflict: Sequence[str] | None = None
    ) -> list[bool]:
        """For each row, whether `unchanged` may skip it when given part of `rows`: its key is a bigint that
        `rows` holds once (a page checked in chunks applies the page's rule, not each chunk's)."""
        columns = _key_columns(rows, tuple(conflict or self.key))
        return [False] * len(rows) if columns is None else _given_once(columns)

    def delete(self, filters: Mapping[str, Any], *, conn: Connection | None = None) -> int:
        """Delete matching rows; an empty filter is refused rather than emptying the table."""
        if not filters:
            raise ValidationFailedError(
                self.table, [("filters", "a delete needs at least one filter")], table=self.table, operation="delete"
            )
        where, params = self._where(filters)
        query = sql.SQL("DELETE FROM {}").format(sql.Identifier(self.table)) + where + sql.SQL(" RETURNING 1")
        return len(run(query, params, table=self.table, operation="delete", conn=conn))
