"""Work rows: a table whose rows are pieces of work carried out after the change that asked for them committed,
at least once (`outbox`: replies to WhatsApp; `crm_operations`: bookings on their way to YClients; `alerts`:
messages for the operators' Telegram chat; `yclients_webhook_events`: webhooks to apply).

Every work row lives one life, in one vocabulary of statuses:

    pending ──claim──▶ an attempt ──▶ done     carried out (`finished_at`)
       ▲                   │    └───▶ failed   given up: its cap reached, or an error no retry mends
       └── retry later ◀───┘                   (`finished_at`, the reason in `last_error`)

There is no "working" status: a claim counts the attempt (`attempts` + 1, before the work starts, so an attempt
that kills its worker still counts) and leases the row by moving `next_attempt_at` past the lease. While the
lease holds nobody else can claim the row; when a worker dies, the lease runs out and the row is due again with
nothing to clean up. The row is the only count of its attempts: the caller compares `attempts` with its cap and
spaces retries with `backoff_delay`.

A row is claimed by id (the task handed that row) or, for a table worked off as a queue, as the oldest due row
with SKIP LOCKED (`claim_next`). A table that declares an `order_key` (a chat's replies, a booking's CRM
operations) is worked in id order per key: a row is claimable only while no earlier row of its key is pending,
and finishing or giving a row up returns the key's next pending row, to be handed on straight away.

Statements are built with `psycopg.sql` from the declared identifiers only, and rendered once per table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from functools import lru_cache
from typing import Any, ClassVar

from psycopg import sql

from shared.core.db import Connection, queue, run
from shared.data.repository import Repository, Row


class Status(StrEnum):
    """The one status vocabulary of every work table (a CHECK constraint in each holds exactly these)."""

    PENDING = "pending"  # waiting for an attempt, or leased to one (next_attempt_at says until when)
    DONE = "done"  # carried out; nothing more to do
    FAILED = "failed"  # given up; last_error says why


WORK_COLUMNS = frozenset({"id", "status", "attempts", "next_attempt_at", "last_error", "finished_at"})
MAX_ERROR_CHARS = 500

_PENDING = sql.Literal(Status.PENDING.value)  # in the text, so the partial indexes on pending rows apply
_LEASE = sql.SQL("attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => %(lease)s)")


@lru_cache(maxsize=256)
def _text(rows: type[WorkRows], step: str, extra: tuple[str, ...] = ()) -> str:
    """Each step's statement, composed (and its identifiers checked) once per table and set of extra columns:
    the inbound path claims and finishes a reply for every message."""
    return rows()._compose(step, extra).as_string()


class WorkRows(Repository):
    """A repository of work rows. Subclasses declare `table`, `columns` (the work columns among them), `key`,
    `model`, and where they differ from the defaults: `order_key` (the columns whose rows are worked one at a
    time in id order; empty for none) and `created_column` (when a row was made, for the backlog's age)."""

    order_key: ClassVar[tuple[str, ...]] = ()
    created_column: ClassVar[str] = "created_at"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A table declared without the columns its life needs is refused at import, not at its first retry."""
        super().__init_subclass__(**kwargs)
        if "table" in cls.__dict__:
            missing = (WORK_COLUMNS | set(cls.order_key) | {cls.created_column}) - cls.columns
            if missing:
                raise TypeError(f"{cls.__name__}: the work table {cls.table} needs the columns {sorted(missing)}")

    # ---- the life of a row -------------------------------------------------------------------------
    def claim(self, row_id: int, lease_seconds: float, *, conn: Connection | None = None) -> Row | None:
        """Take the row for one attempt (counted now), leased for `lease_seconds`; None when it is finished,
        not due (leased to another worker, or waiting for its retry), or an earlier row of its key is pending."""
        rows = run(
            _text(type(self), "claim"),
            {"id": row_id, "lease": lease_seconds},
            table=self.table,
            operation="update",
            conn=conn,
        )
        return rows[0] if rows else None

    def claim_later(self, row_id: int, lease_seconds: float, *, conn: Connection) -> Callable[[], Row | None]:
        """`claim`, queued on `conn` (inside `pipelined`, it leaves with the next reading or the block's end): the
        reading of its outcome, for a row claimed in the transaction that wrote it."""
        params = {"id": row_id, "lease": lease_seconds}
        rows = queue(_text(type(self), "claim"), params, table=self.table, operation="update", conn=conn)
        return lambda: next(iter(rows()), None)

    def claim_next(self, lease_seconds: float, *, conn: Connection | None = None) -> Row | None:
        """Take the oldest due row for one attempt, skipping rows another claimer has locked this moment."""
        rows = run(
            _text(type(self), "claim_next"), {"lease": lease_seconds}, table=self.table, operation="update", conn=conn
        )
        return rows[0] if rows else None

    def retry_later(self, row_id: int, error: str, delay_seconds: float, *, conn: Connection | None = None) -> None:
        """The attempt failed and another may help: due again in `delay_seconds`, the error kept."""
        run(
            _text(type(self), "retry_later"),
            {"id": row_id, "error": error[:MAX_ERROR_CHARS], "delay": delay_seconds},
            table=self.table,
            operation="update",
            conn=conn,
        )

    def finish(self, row_id: int, *, conn: Connection | None = None, **values: Any) -> int | None:
        """The work is carried out (`values` sets the table's own columns, e.g. an outcome); returns the next
        pending row of the same key, to hand on (None without an order key)."""
        return self._end(Status.DONE, row_id, None, values, conn)

    def give_up(self, row_id: int, reason: str, *, conn: Connection | None = None, **values: Any) -> int | None:
        """Final failure, with the reason; returns the next pending row of the same key, which no longer waits."""
        return self._end(Status.FAILED, row_id, reason[:MAX_ERROR_CHARS], values, conn)

    def reopen(self, row_id: int, *, conn: Connection | None = None, **values: Any) -> bool:
        """A given-up row tried again from its first attempt (an operator mended the cause); False unless it
        had failed."""
        params = {"id": row_id, **self._values(values)}
        rows = run(_text(type(self), "reopen", tuple(values)), params, table=self.table, operation="update", conn=conn)
        return bool(rows)

    # ---- for sweeps and health ---------------------------------------------------------------------
    def due_ids(self, limit: int = 500, *, grace_seconds: float = 0.0, conn: Connection | None = None) -> list[int]:
        """Pending rows due at least `grace_seconds` ago, oldest first: the ones whose task was lost. With an
        order key only each key's first pending row, the only one that can be claimed."""
        rows = run(
            _text(type(self), "due_ids"),
            {"grace": grace_seconds, "limit": limit},
            table=self.table,
            operation="select",
            conn=conn,
        )
        return [row["id"] for row in rows]

    def backlog(self, *, conn: Connection | None = None) -> Row:
        """`pending`, `failed` (all time), `failed_last_day` (given up in the last day) and
        `oldest_pending_seconds` (None when nothing is pending), for the health report."""
        return run(_text(type(self), "backlog"), table=self.table, operation="select", conn=conn)[0]

    # ---- statements --------------------------------------------------------------------------------
    def _end(
        self, status: Status, row_id: int, error: str | None, values: Mapping[str, Any], conn: Connection | None
    ) -> int | None:
        params = {"id": row_id, "error": error, **self._values(values)}
        rows = run(
            _text(type(self), str(status), tuple(values)), params, table=self.table, operation="update", conn=conn
        )
        return rows[0]["id"] if rows and self.order_key else None

    def _values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The table's own columns a step sets, as parameters named apart from the step's own."""
        return {f"set_{name}": value for name, value in self._adapt(values).items()}

    def _compose(self, step: str, extra: tuple[str, ...]) -> sql.Composable:
        builders = {
            "claim": self._claim_sql,
            "claim_next": self._claim_next_sql,
            "retry_later": self._retry_later_sql,
            "due_ids": self._due_ids_sql,
            "backlog": self._backlog_sql,
        }
        if step in (Status.DONE, Status.FAILED):
            return self._end_sql(Status(step), extra)
        if step == "reopen":
            return self._reopen_sql(extra)
        return builders[step]()

    def _sets(self, extra: tuple[str, ...]) -> sql.Composable:
        return sql.SQL("").join(
            sql.SQL(", {} = {}").format(self._column(name), sql.Placeholder(f"set_{name}")) for name in extra
        )

    def _earlier_pending(self) -> sql.Composable:
        """` AND` no earlier row of the same key is pending; nothing without an order key."""
        if not self.order_key:
            return sql.SQL("")
        table = sql.Identifier(self.table)
        same_key = sql.SQL(" AND ").join(
            sql.SQL("earlier.{0} = {1}.{0}").format(self._column(name), table) for name in self.order_key
        )
        return sql.SQL(
            " AND NOT EXISTS (SELECT 1 FROM {table} earlier WHERE {same_key}"
            " AND earlier.status = {pending} AND earlier.id < {table}.id)"
        ).format(table=table, same_key=same_key, pending=_PENDING)

    def _claim_sql(self) -> sql.Composable:
        return sql.SQL(
            "UPDATE {table} SET {lease} WHERE id = %(id)s AND status = {pending} AND next_attempt_at <= now()"
            "{order} RETURNING *"
        ).format(table=sql.Identifier(self.table), lease=_LEASE, pending=_PENDING, order=self._earlier_pending())

    def _claim_next_sql(self) -> sql.Composable:
        return sql.SQL(
            "UPDATE {table} SET {lease} WHERE id = (SELECT id FROM {table} WHERE status = {pending}"
            " AND next_attempt_at <= now(){order} ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *"
        ).format(table=sql.Identifier(self.table), lease=_LEASE, pending=_PENDING, order=self._earlier_pending())

    def _retry_later_sql(self) -> sql.Composable:
        return sql.SQL(
            "UPDATE {table} SET last_error = %(error)s, next_attempt_at = now() + make_interval(secs => %(delay)s)"
            " WHERE id = %(id)s AND status = {pending}"
        ).format(table=sql.Identifier(self.table), pending=_PENDING)

    def _end_sql(self, status: Status, extra: tuple[str, ...]) -> sql.Composable:
        """Done or failed, only from pending; with an order key, the statement returns the key's next pending row."""
        table = sql.Identifier(self.table)
        update = sql.SQL(
            "UPDATE {table} SET status = {status}, finished_at = now(), last_error = %(error)s{sets}"
            " WHERE id = %(id)s AND status = {pending}"
        ).format(table=table, status=sql.Literal(status.value), sets=self._sets(extra), pending=_PENDING)
        if not self.order_key:
            return update
        keys = [self._column(name) for name in self.order_key]
        return sql.SQL(
            "WITH ended AS ({update} RETURNING id, {keys})"
            " SELECT later.id FROM {table} later JOIN ended ON {same_key}"
            " WHERE later.status = {pending} AND later.id > ended.id ORDER BY later.id LIMIT 1"
        ).format(
            update=update,
            keys=sql.SQL(", ").join(keys),
            table=table,
            same_key=sql.SQL(" AND ").join(sql.SQL("later.{0} = ended.{0}").format(key) for key in keys),
            pending=_PENDING,
        )

    def _reopen_sql(self, extra: tuple[str, ...]) -> sql.Composable:
        return sql.SQL(
            "UPDATE {table} SET status = {pending}, attempts = 0, next_attempt_at = now(), finished_at = NULL{sets}"
            " WHERE id = %(id)s AND status = {failed} RETURNING id"
        ).format(
            table=sql.Identifier(self.table),
            pending=_PENDING,
            sets=self._sets(extra),
            failed=sql.Literal(Status.FAILED.value),
        )

    def _due_ids_sql(self) -> sql.Composable:
        table = sql.Identifier(self.table)
        due = sql.SQL("next_attempt_at <= now() - make_interval(secs => %(grace)s)")
        if not self.order_key:
            return sql.SQL(
                "SELECT id FROM {table} WHERE status = {pending} AND {due} ORDER BY id LIMIT %(limit)s"
            ).format(table=table, pending=_PENDING, due=due)
        keys = sql.SQL(", ").join(self._column(name) for name in self.order_key)
        return sql.SQL(
            "SELECT id FROM (SELECT DISTINCT ON ({keys}) id, next_attempt_at FROM {table} WHERE status = {pending}"
            " ORDER BY {keys}, id) heads WHERE {due} ORDER BY id LIMIT %(limit)s"
        ).format(keys=keys, table=table, pending=_PENDING, due=due)

    def _backlog_sql(self) -> sql.Composable:
        failed = sql.Literal(Status.FAILED.value)
        return sql.SQL(
            "SELECT count(*) FILTER (WHERE status = {pending}) AS pending,"
            " count(*) FILTER (WHERE status = {failed}) AS failed,"
            " count(*) FILTER (WHERE status = {failed} AND finished_at > now() - interval '1 day') AS failed_last_day,"
            " extract(epoch FROM now() - min({created}) FILTER (WHERE status = {pending}))::float8"
            " AS oldest_pending_seconds FROM {table}"
        ).format(
            pending=_PENDING, failed=failed, created=self._column(self.created_column), table=sql.Identifier(self.table)
        )
