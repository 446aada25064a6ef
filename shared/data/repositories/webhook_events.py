"""`yclients_webhook_events`: every webhook YClients sent, stored before anything is done with it, then applied
like any work row (shared/data/work_rows.py); a repeat (the same body again) is recognised by its key."""

from __future__ import annotations

from typing import Any

from shared.data.models import WebhookEventIn
from shared.data.work_rows import WorkRows


class WebhookEventRepository(WorkRows):
    table = "yclients_webhook_events"
    columns = frozenset(
        {
            "id",
            "event_key",
            "company_id",
            "resource",
            "resource_id",
            "action",
            "payload",
            "received_at",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "finished_at",
        }
    )
    key = ("event_key",)
    model = WebhookEventIn
    json_columns = frozenset({"payload"})
    created_column = "received_at"

    def store(
        self, event_key: str, company_id: int, resource: str, resource_id: int, action: str, payload: Any
    ) -> int | None:
        """The new event's id, or None when the same event was stored before."""
        values = {
            "event_key": event_key,
            "company_id": company_id,
            "resource": resource,
            "resource_id": resource_id,
            "action": action,
            "payload": payload,
        }
        stored = self.bulk_upsert([values], update=[])
        return stored[0]["id"] if stored.changed else None
