"""Rejected input, kept with the reason: nothing the fleet refuses is lost, and nothing is retried forever."""

from __future__ import annotations

import logging
from typing import Any

from psycopg.types.json import Jsonb

from shared.db import Connection, run

log = logging.getLogger(__name__)

MAX_STORED_STRING = 100_000  # a 10 MB text is kept as its first 100k characters, with a note


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_STORED_STRING:
        return value[:MAX_STORED_STRING] + f"… [truncated from {len(value)} characters]"
    if isinstance(value, dict):
        return {str(key): _bounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)[:1000]


def record_dead_letter(
    source: str,
    reason: str,
    payload: Any = None,
    *,
    error_type: str | None = None,
    company_id: int | None = None,
    reference: str | None = None,
    conn: Connection | None = None,
) -> int:
    """Store what was rejected and why; the log line carries the source and reason, never the payload."""
    company = company_id if isinstance(company_id, int) and not isinstance(company_id, bool) else None
    rows = run(
        "INSERT INTO dead_letters (source, reason, error_type, company_id, reference, payload)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (source, reason[:2000], error_type, company, reference, Jsonb(_bounded(payload))),
        table="dead_letters",
        operation="insert",
        conn=conn,
    )
    log.warning("dead letter %s from %s: %s", rows[0]["id"], source, reason[:300])
    return rows[0]["id"]
