"""Where rejected and repaired input is traced: a dead letter's Celery task id, a message's input notes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE dead_letters ADD COLUMN task_id text;
        CREATE INDEX dead_letters_task_idx ON dead_letters (task_id) WHERE task_id IS NOT NULL;
        ALTER TABLE messages ADD COLUMN input_notes text[] NOT NULL DEFAULT '{}';
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE messages DROP COLUMN input_notes;
        DROP INDEX dead_letters_task_idx;
        ALTER TABLE dead_letters DROP COLUMN task_id;
        """
    )
