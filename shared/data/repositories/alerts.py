"""`alerts`: operators' alerts waiting for (or done with) their Telegram delivery, one row per change reported."""

from __future__ import annotations

from typing import Any

from shared.core.db import Connection, run

TABLE = "alerts"
MAX_TEXT = 4096  # Telegram's limit for one message


def add(key: str, kind: str, text: str, *, conn: Connection | None = None) -> bool:
    """Store an alert unless one with this key exists (a change is reported once); True if stored."""
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    rows = run(
        "INSERT INTO alerts (key, kind, text) VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING id",
        (key, kind, text),
        table=TABLE,
        operation="insert",
        conn=conn,
    )
    return bool(rows)


def claim_due(lease_seconds: float) -> dict[str, Any] | None:
    """The oldest due alert, leased so that a second deliverer leaves it alone until the lease ends."""
    rows = run(
        "UPDATE alerts SET next_attempt_at = now() + make_interval(secs => %s), attempts = attempts + 1"
        " WHERE id = (SELECT id FROM alerts WHERE status = 'pending' AND next_attempt_at <= now()"
        " ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)"
        " RETURNING id, kind, text, attempts",
        (lease_seconds,),
        table=TABLE,
        operation="update",
    )
    return rows[0] if rows else None


def mark_sent(alert_id: int) -> None:
    run(
        "UPDATE alerts SET status = 'sent', sent_at = now(), last_error = NULL WHERE id = %s",
        (alert_id,),
        table=TABLE,
        operation="update",
    )


def mark_failed(alert_id: int, error: str, retry_in: float | None) -> None:
    """Try again in `retry_in` seconds, or give up (None)."""
    run(
        "UPDATE alerts SET last_error = %s,"
        " status = CASE WHEN %s::float8 IS NULL THEN 'given_up' ELSE 'pending' END,"
        " next_attempt_at = now() + make_interval(secs => coalesce(%s::float8, 0)) WHERE id = %s",
        (error[:500], retry_in, retry_in, alert_id),
        table=TABLE,
        operation="update",
    )


def backlog() -> dict[str, Any]:
    """Pending alerts, the oldest one's age in seconds, and those given up in the last day (health report)."""
    return run(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,"
        " extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8 AS oldest_seconds,"
        " count(*) FILTER (WHERE status = 'given_up' AND created_at > now() - interval '1 day') AS given_up_day"
        " FROM alerts",
        table=TABLE,
        operation="select",
    )[0]
