"""`yclients_webhook_events`: every webhook YClients sent, stored before anything is done with it; a repeat
(the same body again) is recognised by its key and ignored."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from shared.core.db import run
from shared.data.repository import Row

TABLE = "yclients_webhook_events"


def store(event_key: str, company_id: int, resource: str, resource_id: int, action: str, payload: Any) -> int | None:
    """The new event's id, or None when the same event was stored before."""
    rows = run(
        "INSERT INTO yclients_webhook_events (event_key, company_id, resource, resource_id, action, payload)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_key) DO NOTHING RETURNING id",
        (event_key, company_id, resource, resource_id, action, Jsonb(payload)),
        table=TABLE,
        operation="insert",
    )
    return rows[0]["id"] if rows else None


def get(event_id: int) -> Row | None:
    rows = run("SELECT * FROM yclients_webhook_events WHERE id = %s", (event_id,), table=TABLE, operation="select")
    return rows[0] if rows else None


def processed(event_id: int, error: str | None = None) -> None:
    run(
        "UPDATE yclients_webhook_events SET processed_at = now(), error = %s WHERE id = %s",
        (error[:500] if error else None, event_id),
        table=TABLE,
        operation="update",
    )


def unprocessed(older_than_seconds: float, limit: int = 200) -> list[int]:
    """Events whose handling was lost (the enqueue failed, the worker died): for the sweep."""
    rows = run(
        "SELECT id FROM yclients_webhook_events WHERE processed_at IS NULL"
        " AND received_at < now() - make_interval(secs => %s) ORDER BY id LIMIT %s",
        (older_than_seconds, limit),
        table=TABLE,
        operation="select",
    )
    return [row["id"] for row in rows]


def backlog() -> Row:
    """Events not handled yet, and events whose handling failed in the last day."""
    return run(
        "SELECT count(*) FILTER (WHERE processed_at IS NULL) AS unprocessed,"
        " count(*) FILTER (WHERE error IS NOT NULL AND processed_at > now() - interval '1 day') AS failed_day"
        " FROM yclients_webhook_events",
        table=TABLE,
        operation="select",
    )[0]
