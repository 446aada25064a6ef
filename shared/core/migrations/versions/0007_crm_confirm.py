"""A visit confirmed in the chat is confirmed in YClients too: CRM operations of kind "confirm".

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE crm_operations DROP CONSTRAINT crm_operations_kind_check;
        ALTER TABLE crm_operations ADD CONSTRAINT crm_operations_kind_check
            CHECK (kind IN ('create', 'reschedule', 'cancel', 'confirm'));
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DELETE FROM crm_operations WHERE kind = 'confirm';
        ALTER TABLE crm_operations DROP CONSTRAINT crm_operations_kind_check;
        ALTER TABLE crm_operations ADD CONSTRAINT crm_operations_kind_check
            CHECK (kind IN ('create', 'reschedule', 'cancel'));
        """
    )
