"""`yclients_webhook_events`: webhooks YClients sent, as ids only, stored before anything is done with them and
applied like any work row (shared/data/work_rows.py); `yclients_webhook_secrets`: each salon's webhook secrets,
hashed.

An event keeps company, resource, resource id, action, received time and status, never the body (names,
phones). Webhooks for a record whose event is still waiting for its first attempt are folded into it
(`repeats`): the targeted sync reads the record's current state anyway, so one read serves them all.
"""

from __future__ import annotations

import hashlib
import hmac

from shared.core.db import Connection, run
from shared.data.models import WebhookEventIn
from shared.data.repository import Repository, Row
from shared.data.work_rows import WORK_COLUMNS, WorkRows


class WebhookEventRepository(WorkRows):
    table = "yclients_webhook_events"
    columns = WORK_COLUMNS | frozenset({"company_id", "resource", "resource_id", "action", "repeats", "received_at"})
    model = WebhookEventIn
    created_column = "received_at"

    def store(
        self, company_id: int, resource: str, resource_id: int, action: str, *, conn: Connection | None = None
    ) -> int | None:
        """The new event's id; None when a waiting event of the same record took this webhook in (nothing new
        to enqueue: its own task reads the record's current state)."""
        values = self.validate(
            {"company_id": company_id, "resource": resource, "resource_id": resource_id, "action": action}
        )
        rows = run(
            "INSERT INTO yclients_webhook_events (company_id, resource, resource_id, action)"
            " VALUES (%(company_id)s, %(resource)s, %(resource_id)s, %(action)s)"
            " ON CONFLICT (company_id, resource, resource_id) WHERE status = 'pending' AND attempts = 0"
            " DO UPDATE SET action = EXCLUDED.action, repeats = yclients_webhook_events.repeats + 1"
            " RETURNING id, (xmax = 0) AS inserted",
            values,
            table=self.table,
            operation="insert",
            conn=conn,
        )
        return rows[0]["id"] if rows[0]["inserted"] else None

    def due_events(self, limit: int, *, grace_seconds: float, conn: Connection | None = None) -> list[Row]:
        """Pending events due at least `grace_seconds` ago (their task lost, or never sent: the salon was over its
        limit), oldest first, with their company for the per-salon limit."""
        return run(
            "SELECT id, company_id FROM yclients_webhook_events WHERE status = 'pending'"
            " AND next_attempt_at <= now() - make_interval(secs => %s) ORDER BY id LIMIT %s",
            (grace_seconds, limit),
            table=self.table,
            operation="select",
            conn=conn,
        )

    def crm_write_pending(self, event_id: int, *, conn: Connection | None = None) -> bool:
        """Whether a CRM operation of the booking linked to the event's record is still pending: the webhook's
        read must not overtake the fleet's own write of that record."""
        rows = run(
            "SELECT EXISTS (SELECT 1 FROM yclients_webhook_events e"
            " JOIN bookings b ON b.company_id = e.company_id AND b.yclients_id = e.resource_id"
            " JOIN crm_operations o ON o.booking_id = b.id AND o.status = 'pending'"
            " WHERE e.id = %s AND e.resource = 'record') AS pending",
            (event_id,),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return bool(rows[0]["pending"])

    def postpone(self, event_id: int, seconds: float, *, conn: Connection | None = None) -> None:
        """Due again in `seconds`, no attempt counted (it waits for a CRM write; the sweep brings it back). Only a
        due row: a leased one belongs to its attempt, whose lease must not be cut short."""
        run(
            "UPDATE yclients_webhook_events SET next_attempt_at = now() + make_interval(secs => %s)"
            " WHERE id = %s AND status = 'pending' AND next_attempt_at <= now()",
            (seconds, event_id),
            table=self.table,
            operation="update",
            conn=conn,
        )


def secret_hash(secret: str) -> str:
    """SHA-256 of the secret, hex: the secrets are 256 random bits, so a fast hash is enough (nothing to guess)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class WebhookSecretRepository(Repository):
    """Each salon's webhook secrets, by hash; a salon has one, or two during a rotation's grace period."""

    table = "yclients_webhook_secrets"
    columns = frozenset({"id", "company_id", "secret_hash", "created_at", "expires_at"})

    def company_of(self, secret: str, *, conn: Connection | None = None) -> int | None:
        """The salon whose valid secret this is, or None (unknown, expired or revoked)."""
        presented = secret_hash(secret)
        rows = run(
            "SELECT company_id, secret_hash FROM yclients_webhook_secrets"
            " WHERE secret_hash = %s AND (expires_at IS NULL OR expires_at > now())",
            (presented,),
            table=self.table,
            operation="select",
            conn=conn,
        )
        for row in rows:
            if hmac.compare_digest(row["secret_hash"], presented):
                return int(row["company_id"])
        return None

    def has_secret(self, company_id: int, *, conn: Connection | None = None) -> bool:
        """Whether the salon has a valid secret of its own (then the old fleet-wide one no longer opens its door)."""
        rows = run(
            "SELECT EXISTS (SELECT 1 FROM yclients_webhook_secrets WHERE company_id = %s"
            " AND (expires_at IS NULL OR expires_at > now())) AS found",
            (company_id,),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return bool(rows[0]["found"])

    def replace(
        self, company_id: int, secret: str, grace_hours: float | None, *, conn: Connection | None = None
    ) -> None:
        """The salon's new secret. `grace_hours` None: every older secret goes now (set); otherwise the valid
        ones stay that long (rotate) and expired ones go."""
        if grace_hours is None:
            self.revoke(company_id, conn=conn)
        else:
            run(
                "DELETE FROM yclients_webhook_secrets WHERE company_id = %s AND expires_at <= now()",
                (company_id,),
                table=self.table,
                operation="delete",
                conn=conn,
            )
            run(
                "UPDATE yclients_webhook_secrets SET expires_at = now() + make_interval(secs => %s)"
                " WHERE company_id = %s AND (expires_at IS NULL OR expires_at > now() + make_interval(secs => %s))",
                (grace_hours * 3600, company_id, grace_hours * 3600),
                table=self.table,
                operation="update",
                conn=conn,
            )
        run(
            "INSERT INTO yclients_webhook_secrets (company_id, secret_hash) VALUES (%s, %s)",
            (company_id, secret_hash(secret)),
            table=self.table,
            operation="insert",
            conn=conn,
        )

    def revoke(self, company_id: int, *, conn: Connection | None = None) -> int:
        """Every secret of the salon, gone at once; how many there were."""
        rows = run(
            "DELETE FROM yclients_webhook_secrets WHERE company_id = %s RETURNING 1",
            (company_id,),
            table=self.table,
            operation="delete",
            conn=conn,
        )
        return len(rows)
