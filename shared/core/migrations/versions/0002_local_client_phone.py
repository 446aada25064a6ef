"""One local client per phone: a client first met in a chat (no YClients id yet) is created once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE UNIQUE INDEX clients_local_phone_key ON clients (company_id, phone)"
        " WHERE yclients_id IS NULL AND deleted_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS clients_local_phone_key")
