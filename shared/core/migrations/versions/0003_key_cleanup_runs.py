"""What each WhatsApp key cleanup did (or, dry, would do).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE key_cleanup_runs (
            id            bigserial PRIMARY KEY,
            dry_run       boolean NOT NULL,
            status        text NOT NULL DEFAULT 'running'
                          CHECK (status IN ('running', 'succeeded', 'partial', 'failed')),
            started_at    timestamptz NOT NULL DEFAULT now(),
            finished_at   timestamptz,
            batches       integer NOT NULL DEFAULT 0,
            deleted       jsonb NOT NULL DEFAULT '{}',
            by_company    jsonb NOT NULL DEFAULT '{}',
            unknown_types jsonb NOT NULL DEFAULT '{}',
            error         text
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS key_cleanup_runs")
