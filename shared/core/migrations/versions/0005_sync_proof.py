"""What the YClients sync refused, what waits for its references, and why a run deleted nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE sync_runs ADD COLUMN deletion text, ADD COLUMN rows_pending integer NOT NULL DEFAULT 0;
        CREATE TABLE sync_rejected_rows (
            company_id    bigint NOT NULL,
            entity        text NOT NULL,
            row_key       text NOT NULL,
            reason        text NOT NULL,
            raw           jsonb,
            run_id        bigint,
            first_seen_at timestamptz NOT NULL DEFAULT now(),
            last_seen_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (company_id, entity, row_key)
        );
        CREATE TABLE sync_pending_records (
            company_id    bigint NOT NULL,
            yclients_id   bigint NOT NULL,
            reason        text NOT NULL,
            raw           jsonb NOT NULL,
            first_seen_at timestamptz NOT NULL DEFAULT now(),
            last_tried_at timestamptz NOT NULL DEFAULT now(),
            tries         integer NOT NULL DEFAULT 1,
            PRIMARY KEY (company_id, yclients_id)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE sync_pending_records;
        DROP TABLE sync_rejected_rows;
        ALTER TABLE sync_runs DROP COLUMN deletion, DROP COLUMN rows_pending;
        """
    )
