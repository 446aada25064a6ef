"""Alerts for operators' Telegram chat, kept until delivered: raised in the transaction of the change they report.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE alerts (
            id bigserial PRIMARY KEY,
            key text NOT NULL UNIQUE,
            kind text NOT NULL CHECK (kind IN ('health', 'whatsapp_session', 'backup', 'drill', 'mass_delete')),
            text text NOT NULL CHECK (length(text) BETWEEN 1 AND 4096),
            status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'given_up')),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            created_at timestamptz NOT NULL DEFAULT now(),
            sent_at timestamptz,
            last_error text
        );
        CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE status = 'pending';
        CREATE INDEX alerts_created ON alerts (created_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE alerts")
