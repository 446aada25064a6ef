"""Webhooks safe per salon: a secret of each salon's own, events that keep ids only, one pending event per record.

- `yclients_webhook_secrets`: each salon's webhook secrets, stored as the SHA-256 of a 256-bit random secret
  (the secret itself is printed once by `fleet webhook-secret` and never stored). `expires_at` is set on the
  old secret of a rotation (its grace period); NULL: valid until rotated or revoked.
- `yclients_webhook_events` loses `payload` (the salon's body: names, phones) and `event_key` (the body's hash:
  any change to a body made a new event). It gains `repeats` (webhooks coalesced into the row) and a partial
  unique index: one pending, not yet attempted event per (company, resource, resource id). Pending duplicates
  already stored are folded into their oldest row on the way up.

The downgrade gives every event an empty payload and an `event_key` of its own (`v11:<id>`): the bodies are gone.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE yclients_webhook_secrets (
            id              bigserial PRIMARY KEY,
            company_id      bigint NOT NULL CHECK (company_id > 0),
            secret_hash     text NOT NULL UNIQUE CHECK (length(secret_hash) = 64),
            created_at      timestamptz NOT NULL DEFAULT now(),
            expires_at      timestamptz
        );
        CREATE INDEX yclients_webhook_secrets_company ON yclients_webhook_secrets (company_id);

        ALTER TABLE yclients_webhook_events ADD COLUMN repeats integer NOT NULL DEFAULT 0;
        WITH firsts AS (
            SELECT min(id) AS id, count(*) - 1 AS folded FROM yclients_webhook_events
             WHERE status = 'pending' AND attempts = 0 GROUP BY company_id, resource, resource_id
        )
        UPDATE yclients_webhook_events events SET repeats = firsts.folded FROM firsts WHERE events.id = firsts.id;
        DELETE FROM yclients_webhook_events later
         WHERE later.status = 'pending' AND later.attempts = 0 AND EXISTS (
            SELECT 1 FROM yclients_webhook_events earlier
             WHERE earlier.company_id = later.company_id AND earlier.resource = later.resource
               AND earlier.resource_id = later.resource_id AND earlier.status = 'pending'
               AND earlier.attempts = 0 AND earlier.id < later.id);
        ALTER TABLE yclients_webhook_events DROP COLUMN payload, DROP COLUMN event_key;
        CREATE UNIQUE INDEX yclients_webhook_events_one_waiting
            ON yclients_webhook_events (company_id, resource, resource_id) WHERE status = 'pending' AND attempts = 0;
        CREATE INDEX yclients_webhook_events_finished ON yclients_webhook_events (finished_at)
            WHERE status <> 'pending';
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX yclients_webhook_events_finished;
        DROP INDEX yclients_webhook_events_one_waiting;
        ALTER TABLE yclients_webhook_events
            ADD COLUMN event_key text, ADD COLUMN payload jsonb NOT NULL DEFAULT '{}';
        UPDATE yclients_webhook_events SET event_key = 'v11:' || id;
        ALTER TABLE yclients_webhook_events ALTER COLUMN event_key SET NOT NULL,
            ALTER COLUMN payload DROP DEFAULT,
            ADD CONSTRAINT yclients_webhook_events_event_key_key UNIQUE (event_key),
            DROP COLUMN repeats;
        DROP TABLE yclients_webhook_secrets;
        """
    )
