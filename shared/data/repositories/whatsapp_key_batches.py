"""The key cleanup's statements: one pass over `whatsapp_keys` in physical order, a short transaction a batch.

A batch is a run of the table's line pointers (a TID range) holding up to `size` deletable keys. Its statement
finds them, counts them per company and type, and deletes the range with the policy's condition repeated, so a key
the gateway wrote after the statement began is checked again at delete time (PostgreSQL re-evaluates the WHERE
clause, the range included, on the newest version of a row updated meanwhile). Why not an index: the rows an
index finds are scattered over the table and have to be looked up again by position to be deleted (1.5-2.4 us a
row measured for per-company deletes), while a TID range is read page by page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from shared.core.db import execute, run, transaction
from shared.data.errors import DataLayerError, TransientError
from shared.data.repositories.whatsapp import Deletable
from shared.data.repository import Repository

Tid = tuple[int, int]  # (page, line pointer): a row's physical position, PostgreSQL's ctid
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
_TID = re.compile(r"\((\d+),(\d+)\)")
_BATCH_SETTING = "fleet.key_cleanup_batch"


class BatchBlocked(DataLayerError):
    """A batch waited its lock timeout for a key another transaction holds, and was rolled back."""


class BatchTooSlow(DataLayerError):
    """A batch ran past its time limit (a stalled machine, a far bigger batch than its last), and was rolled
    back: its deleted keys' locks, which a gateway write would wait for, are held no longer than the limit."""


class BatchMiscounted(DataLayerError):
    """A batch deleted fewer keys than it counted, and was rolled back: a counted key was written by the gateway
    after the batch began (its new version, elsewhere in the table or no longer deletable, fails the delete's
    re-check), and which company it was is not known."""


@dataclass(frozen=True)
class PrunePolicy:
    """Every rule as one condition, with its cutoffs fixed once by the database clock: a key idle at the run's
    start stays idle unless it is written, and a write is what the delete re-checks."""

    condition: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunedBatch:
    found: int  # deletable keys the batch found from its start, at most its size
    last: Tid | None  # the position of the last of them: the next batch starts after it
    deleted: dict[tuple[str, str], int]  # (company, key type) -> keys deleted


def _tid(position: Tid) -> str:
    return f"({position[0]},{position[1]})"


def _parse_tid(text: str | None) -> Tid | None:
    if text is None:
        return None
    found = _TID.fullmatch(text)
    if found is None:
        raise ValueError(f"not a tid: {text!r}")
    return int(found[1]), int(found[2])


def _counts(rows: list[list[Any]] | None) -> dict[tuple[str, str], int]:
    return {(company, key_type): int(n) for company, key_type, n in rows or []}


class WhatsAppKeyBatchRepository(Repository):
    table = "whatsapp_keys"
    columns = frozenset({"company_id", "key_type", "key_id", "value", "created_at", "updated_at", "expires_at"})
    key = ("company_id", "key_type", "key_id")

    def key_types(self) -> list[str]:
        """The key types the table holds, walked through the key-type index one distinct value at a time (a
        loose index scan: microseconds, where counting every key by type read the whole index, 63 ms at 1M)."""
        rows = run(
            """
            WITH RECURSIVE types(key_type) AS (
                SELECT min(key_type) FROM whatsapp_keys
                UNION ALL
                SELECT (SELECT min(k.key_type) FROM whatsapp_keys k WHERE k.key_type > t.key_type)
                  FROM types t WHERE t.key_type IS NOT NULL
            )
            SELECT key_type FROM types WHERE key_type IS NOT NULL
            """,
            table=self.table,
            operation="select",
        )
        return [row["key_type"] for row in rows]

    def count_types(self, key_types: list[str]) -> dict[str, int]:
        """How many keys each of `key_types` holds."""
        rows = run(
            "SELECT key_type, count(*) AS n FROM whatsapp_keys WHERE key_type = ANY(%s) GROUP BY key_type",
            (key_types,),
            table=self.table,
            operation="select",
        )
        return {row["key_type"]: row["n"] for row in rows}

    def policy(self, rules: Sequence[Deletable]) -> PrunePolicy:
        """The rules as one condition over a row, cutoffs as parameters: `now() - make_interval(...)` is
        computed again for every row it is tested on (0.07-0.2 us a row)."""
        idle_days = sorted({rule.idle_days for rule in rules if rule.idle_days is not None})
        clock = run(
            "SELECT now() AS now, array(SELECT now() - make_interval(days => d) FROM unnest(%s::int[]) AS d"
            " ORDER BY d) AS cutoffs",
            (idle_days,),
            table=None,
            operation="select",
        )[0]
        cutoff = dict(zip(idle_days, clock["cutoffs"], strict=True))
        params: dict[str, Any] = {}
        parts: list[sql.Composable] = []
        for n, rule in enumerate(rules):
            params[f"type_{n}"] = rule.key_type
            if rule.idle_days is None:
                part = sql.SQL("key_type = {} AND expires_at < {}")
                params[f"cutoff_{n}"] = clock["now"]
            else:
                part = sql.SQL("key_type = {} AND updated_at < {}")
                params[f"cutoff_{n}"] = cutoff[rule.idle_days]
            part = part.format(sql.Placeholder(f"type_{n}"), sql.Placeholder(f"cutoff_{n}"))
            if rule.protected:
                part = part + sql.SQL(" AND key_id <> ALL({})").format(sql.Placeholder(f"protected_{n}"))
                params[f"protected_{n}"] = list(rule.protected)
            parts.append(sql.SQL("({})").format(part))
        condition = sql.SQL("({})").format(sql.SQL(" OR ").join(parts)) if parts else sql.SQL("false")
        return PrunePolicy(condition, params)

    def pages(self) -> int:
        """The table's length in pages now: what the gateway appends later is fresh, not the run's to look at."""
        rows = run(
            "SELECT pg_relation_size('whatsapp_keys') / current_setting('block_size')::int AS pages",
            table=self.table,
            operation="select",
        )
        return int(rows[0]["pages"])

    @staticmethod
    def _begin_batch(lock_timeout_ms: int, time_limit_ms: int) -> None:
        """A batch waits at most `lock_timeout_ms` for a row the gateway holds, and runs at most `time_limit_ms`.
        Its commit does not wait for the WAL flush: a crash can undo the last batches' deletes, which the next
        run simply repeats, and the run's journal entry, written with a flushed commit, flushes every batch
        before it. No JIT: a large batch is estimated costly enough to be compiled, which takes longer than the
        batch."""
        run(
            "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true),"
            " set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true)",
            (f"{lock_timeout_ms}ms", f"{time_limit_ms}ms"),
            table=None,
            operation="select",
        )

    def _rolled_back(self, exc: TransientError) -> DataLayerError:
        """The batch's own limits, told apart from other transient errors."""
        if exc.sqlstate == LOCK_NOT_AVAILABLE:
            return BatchBlocked(str(exc), table=self.table, operation="delete")
        if exc.sqlstate == QUERY_CANCELED:
            return BatchTooSlow(str(exc), table=self.table, operation="delete")
        return exc

    def delete_counted(
        self, policy: PrunePolicy, start: Tid, stop_page: int, size: int, *, lock_timeout_ms: int, time_limit_ms: int
    ) -> PrunedBatch:
        """Find, count and delete up to `size` deletable keys from `start` (pages before `stop_page`) in one
        statement and one pass over the rows.

        A DELETE's RETURNING reads every deleted row again (0.3-0.4 us a row, as long as the delete itself), so
        the counts are taken from the found rows instead and handed back in a transaction-local setting. Both
        read one snapshot and a TID range scan returns rows in position order, so the deleted keys are a
        subset of the counted ones; equal totals make the counts exact, and unequal ones (the gateway wrote a
        counted key after the batch began) roll the batch back: BatchMiscounted. A wait longer than the lock
        timeout rolls it back too (BatchBlocked), as does running past the time limit (BatchTooSlow)."""
        statement = sql.SQL(
            """
            WITH batch AS MATERIALIZED (
                SELECT max(last) AS last,
                       set_config({setting}, json_build_object(
                           'last', max(last)::text,
                           'found', coalesce(sum(n), 0),
                           'counts', coalesce(json_agg(json_build_array(company_id, key_type, n)), '[]')
                       )::text, true) AS summary
                  FROM (SELECT company_id, key_type, count(*) AS n, max(ctid) AS last
                          FROM (SELECT ctid, company_id, key_type FROM whatsapp_keys
                                 WHERE ctid >= %(start)s::tid AND ctid < %(stop)s::tid AND {condition}
                                 LIMIT %(size)s) AS found
                         GROUP BY company_id, key_type) AS per_company
            )
            DELETE FROM whatsapp_keys
             WHERE ctid >= %(start)s::tid AND ctid <= (SELECT last FROM batch) AND {condition}
            """
        ).format(setting=sql.Literal(_BATCH_SETTING), condition=policy.condition)
        params = {**policy.params, "start": _tid(start), "stop": _tid((stop_page, 0)), "size": size}
        try:
            with transaction():
                self._begin_batch(lock_timeout_ms, time_limit_ms)
                deleted = execute(statement, params, table=self.table, operation="delete")
                rows = run("SELECT current_setting(%s) AS summary", (_BATCH_SETTING,), table=None, operation="select")
                summary = json.loads(rows[0]["summary"])
                if deleted > summary["found"]:  # never, while a TID range scan reads in position order
                    raise DataLayerError(
                        f"deleted {deleted} keys, more than the {summary['found']} counted: counts not trusted",
                        table=self.table,
                        operation="delete",
                    )
                if deleted < summary["found"]:
                    raise BatchMiscounted(
                        f"deleted {deleted} of the {summary['found']} keys counted",
                        table=self.table,
                        operation="delete",
                    )
        except TransientError as exc:
            raise self._rolled_back(exc) from None
        return PrunedBatch(int(summary["found"]), _parse_tid(summary["last"]), _counts(summary["counts"]))

    def delete_locking(
        self, policy: PrunePolicy, start: Tid, stop_page: int, size: int, *, lock_timeout_ms: int, time_limit_ms: int
    ) -> PrunedBatch:
        """The careful batch, for where a counted one was blocked: lock the found keys first,
        skipping any another transaction holds (it never waits for one), and count what was deleted. Exact
        whatever the gateway does, at about twice the cost a row."""
        statement = sql.SQL(
            """
            WITH found AS MATERIALIZED (
                SELECT ctid FROM whatsapp_keys
                 WHERE ctid >= %(start)s::tid AND ctid < %(stop)s::tid AND {condition}
                 LIMIT %(size)s
            ), locked AS MATERIALIZED (
                SELECT ctid FROM whatsapp_keys
                 WHERE ctid = ANY(ARRAY(SELECT ctid FROM found)) AND {condition}
                   FOR UPDATE SKIP LOCKED
            ), deleted AS (
                DELETE FROM whatsapp_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM locked))
                RETURNING company_id, key_type
            )
            SELECT (SELECT count(*) FROM found) AS found, (SELECT max(ctid) FROM found)::text AS last,
                   (SELECT json_agg(json_build_array(company_id, key_type, n))
                      FROM (SELECT company_id, key_type, count(*) AS n FROM deleted GROUP BY company_id, key_type)
                           AS per_company) AS counts
            """
        ).format(condition=policy.condition)
        params = {**policy.params, "start": _tid(start), "stop": _tid((stop_page, 0)), "size": size}
        try:
            with transaction():
                self._begin_batch(lock_timeout_ms, time_limit_ms)
                row = run(statement, params, table=self.table, operation="delete")[0]
        except TransientError as exc:
            raise self._rolled_back(exc) from None
        return PrunedBatch(int(row["found"]), _parse_tid(row["last"]), _counts(row["counts"]))


@contextmanager
def unflushed() -> Iterator[None]:
    """A transaction whose commit does not wait for the WAL flush: for the cleanup's progress records, which the
    run's final record (flushed) makes durable together with every batch before it."""
    with transaction():
        run("SELECT set_config('synchronous_commit', 'off', true)", table=None, operation="select")
        yield
