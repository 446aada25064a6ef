"""The booking loop with YClients: pending CRM operations, reminders sent, webhook events received.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE bookings ADD COLUMN crm_state text NOT NULL DEFAULT 'synced'
            CHECK (crm_state IN ('pending', 'synced', 'refused'));

        CREATE TABLE crm_operations (
            id              bigserial PRIMARY KEY,
            company_id      bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
            booking_id      bigint NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
            kind            text NOT NULL CHECK (kind IN ('create', 'reschedule', 'cancel')),
            chat_id         text,
            details         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'done', 'refused', 'failed')),
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error      text,
            outcome         text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            finished_at     timestamptz
        );
        CREATE INDEX crm_operations_due ON crm_operations (next_attempt_at) WHERE status = 'pending';
        CREATE INDEX crm_operations_booking ON crm_operations (booking_id, id);
        CREATE UNIQUE INDEX crm_operations_one_create ON crm_operations (booking_id) WHERE kind = 'create';

        CREATE TABLE reminders (
            booking_id      bigint NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
            kind            text NOT NULL CHECK (kind IN ('evening', 'before')),
            outbox_id       bigint,
            answer          text CHECK (answer IN ('confirmed', 'cancelled')),
            sent_at         timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (booking_id, kind)
        );

        CREATE TABLE yclients_webhook_events (
            id              bigserial PRIMARY KEY,
            event_key       text NOT NULL UNIQUE,
            company_id      bigint NOT NULL,
            resource        text NOT NULL,
            resource_id     bigint NOT NULL,
            action          text NOT NULL,
            payload         jsonb NOT NULL,
            received_at     timestamptz NOT NULL DEFAULT now(),
            processed_at    timestamptz,
            error           text
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE yclients_webhook_events;
        DROP TABLE reminders;
        DROP TABLE crm_operations;
        ALTER TABLE bookings DROP COLUMN crm_state;
        """
    )
