"""Rejected input, kept with the reason: nothing the fleet refuses is lost, and nothing is retried forever.

`record_dead_letter` cannot fail on its input: every value is made storable first (see `shared.core.storable`),
an id the bigint column cannot hold stays in the payload only, and the notes say what was changed. When
PostgreSQL itself is unreachable, the dead letter is parked in a Redis list (the spool, `SPOOL_KEY`), which
the broker's consumers also use (they run in the worker's main process, without a database pool); the
maintenance worker files the spool into the table every minute (`file_spooled`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import redis
import sentry_sdk
from psycopg.types.json import Jsonb

from shared.core.db import Connection, run, transaction
from shared.core.locks import LockClass, transaction_lock
from shared.core.redis_clients import process_redis
from shared.core.settings import get_settings
from shared.core.storable import JsonSafe, clean_text, is_bigint_id
from shared.data.errors import DataLayerError
from shared.observability.prometheus_metrics import count_dead_letter

log = logging.getLogger(__name__)

SPOOL_KEY = "fleet:dead_letters:spool"
MAX_STORED_STRING = 100_000  # a 10 MB text is kept as its first 100k characters, with a note


def _label(value: object, limit: int) -> str | None:
    """A short text column (source, reason, reference): cleaned and bounded, never an error."""
    if value is None:
        return None
    text, _ = clean_text(value if isinstance(value, str) else repr(value))
    return text[:limit]


def dead_letter_row(
    source: str,
    reason: str,
    payload: Any = None,
    *,
    error_type: str | None = None,
    company_id: Any = None,
    reference: Any = None,
    task_id: Any = None,
) -> dict[str, Any]:
    """The row as the table can hold it; what had to change is listed under the payload's notes."""
    safe = JsonSafe(max_string=MAX_STORED_STRING)
    stored = safe.convert(payload)
    notes = list(safe.notes)
    company = company_id if is_bigint_id(company_id) else None
    if company_id is not None and company is None:
        notes.append(f"company id {_label(company_id, 60)!s} is not a bigint id; kept in the payload only")
    if notes:
        stored = {"payload": stored, "notes": notes, "company_id": JsonSafe().convert(company_id)}
    return {
        "source": _label(source, 200) or "unknown",
        "reason": _label(reason, 2000) or "no reason given",
        "error_type": _label(error_type, 200),
        "company_id": company,
        "reference": _label(reference, 200),
        "task_id": _label(task_id, 200),
        "payload": stored,
    }


def _insert(row: dict[str, Any], conn: Connection | None) -> int:
    with transaction(conn):  # a savepoint inside the caller's transaction: a failure here leaves it usable
        rows = run(
            "INSERT INTO dead_letters (source, reason, error_type, company_id, reference, task_id, payload)"
            " VALUES (%(source)s, %(reason)s, %(error_type)s, %(company_id)s, %(reference)s, %(task_id)s,"
            " %(payload)s) RETURNING id",
            {**row, "payload": Jsonb(row["payload"])},
            table="dead_letters",
            operation="insert",
            conn=conn,
        )
    return rows[0]["id"]


def record_dead_letter(
    source: str,
    reason: str,
    payload: Any = None,
    *,
    error_type: str | None = None,
    company_id: Any = None,
    reference: Any = None,
    task_id: Any = None,
    conn: Connection | None = None,
) -> int | None:
    """Store what was rejected and why; the log line carries the source and reason, never the payload.

    Returns the row id, or None when the letter went to the spool because PostgreSQL refused or was away.
    Inside a caller's transaction (`conn`) a database error is raised instead: that transaction decides.
    """
    row = dead_letter_row(
        source, reason, payload, error_type=error_type, company_id=company_id, reference=reference, task_id=task_id
    )
    try:
        letter_id = _insert(row, conn)
    except DataLayerError as exc:
        if conn is not None:
            raise
        log.error("dead letter from %s could not be stored (%s); spooling it", row["source"], type(exc).__name__)
        spool(row)
        count_dead_letter(row["source"])
        return None
    count_dead_letter(row["source"])
    log.warning("dead letter %s from %s: %s", letter_id, row["source"], row["reason"][:300])
    return letter_id


def counts() -> dict[str, int]:
    """Dead letters kept in all, and in the last day."""
    row = run(
        "SELECT count(*) AS total, count(*) FILTER (WHERE created_at > now() - interval '1 day') AS day"
        " FROM dead_letters",
        table="dead_letters",
        operation="select",
    )[0]
    return {"total": row["total"], "day": row["day"]}


def spool(row: dict[str, Any], client: redis.Redis | None = None) -> bool:
    """Park a dead letter in Redis until the maintenance worker files it; False when Redis is away too."""
    entry = {**row, "spooled_at": datetime.now(UTC).isoformat()}
    try:
        client = client or process_redis(get_settings().redis_url.get_secret_value())
        client.lpush(SPOOL_KEY, json.dumps(entry, ensure_ascii=True))
    except redis.RedisError as exc:
        # Both stores are down: the worker cannot keep this letter. Say so loudly, without its content.
        log.critical("dead letter from %s LOST: neither PostgreSQL nor Redis took it", row["source"])
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("component", "dead_letters")
            scope.set_tag("source", row["source"])
            sentry_sdk.capture_exception(exc)
        return False
    log.warning("dead letter from %s spooled: %s", row["source"], row["reason"][:300])
    return True


def spool_length(client: redis.Redis | None = None) -> int:
    client = client or process_redis(get_settings().redis_url.get_secret_value())
    return int(client.llen(SPOOL_KEY))


def spooled_letters(limit: int = 10_000, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """The letters still waiting in the spool, oldest first, as rows plus `position` (1: the next to be filed)
    and `spooled_at`: an operator sees them beside the table's (`fleet dead-letters list`). At most `limit`."""
    client = client or process_redis(get_settings().redis_url.get_secret_value())
    raw_entries = client.lrange(SPOOL_KEY, -limit, -1)
    return [_spooled_letter(raw, position) for position, raw in enumerate(reversed(raw_entries), 1)]


def spooled_letter(position: int, client: redis.Redis | None = None) -> dict[str, Any] | None:
    """The spooled letter at `position` (as `spooled_letters` numbers them), or None."""
    client = client or process_redis(get_settings().redis_url.get_secret_value())
    raw = client.lindex(SPOOL_KEY, -position) if position > 0 else None
    return None if raw is None else _spooled_letter(raw, position)


def _spooled_letter(raw: bytes, position: int) -> dict[str, Any]:
    row = _spooled_row(raw)
    spooled_at = None
    try:
        stamp = json.loads(raw)["spooled_at"]
        spooled_at = datetime.fromisoformat(stamp)
        row["reason"] = row["reason"].removesuffix(f" (spooled at {stamp})")
    except (ValueError, TypeError, KeyError):
        pass  # an entry that is not ours any more: shown as it is, without a time
    return {**row, "position": position, "spooled_at": spooled_at}


def file_spooled(limit: int = 500, client: redis.Redis | None = None) -> int:
    """Move up to `limit` spooled letters into the table, oldest first; returns how many were filed.

    The rows are committed before they leave the list, so a crash in between files a letter twice rather
    than never; the advisory lock keeps two filers from taking the same entries.
    """
    client = client or process_redis(get_settings().redis_url.get_secret_value())
    with transaction() as conn:
        transaction_lock(LockClass.FILE_SPOOL, "spool", table="dead_letters", conn=conn)
        raw_entries = client.lrange(SPOOL_KEY, -limit, -1)  # LPUSH adds at the head: the oldest are at the tail
        for raw in reversed(raw_entries):
            _insert(_spooled_row(raw), conn)
    if raw_entries:
        client.ltrim(SPOOL_KEY, 0, -len(raw_entries) - 1)
        log.info("filed %s spooled dead letters", len(raw_entries))
    return len(raw_entries)


def _spooled_row(raw: bytes) -> dict[str, Any]:
    """A spooled entry back as a row; an entry that is not ours any more is filed as it is, with a note."""
    try:
        entry = json.loads(raw)
        if not isinstance(entry, dict):
            raise ValueError("not an object")
    except ValueError:
        return dead_letter_row("spool", "unreadable spool entry", raw, error_type="SpoolEntry")
    spooled_at = entry.pop("spooled_at", None)
    row = dead_letter_row(
        entry.get("source") or "spool",
        entry.get("reason") or "no reason given",
        entry.get("payload"),
        error_type=entry.get("error_type"),
        company_id=entry.get("company_id"),
        reference=entry.get("reference"),
        task_id=entry.get("task_id"),
    )
    row["reason"] = (row["reason"] + f" (spooled at {spooled_at})")[:2000] if spooled_at else row["reason"]
    return row
