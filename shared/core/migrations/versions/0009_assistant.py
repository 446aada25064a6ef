"""The assistant's per-salon settings, and chats handed over to a person.

`salon_assistant`: a salon's own words for its services and masters, and what it tells clients about itself
(address, directions, hours, phone, payment, parking). Messages that arrive while a chat is with the salon's
administrator are kept with status `held` (stored, not answered automatically); alerts gain the kinds
`handover` and `late`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE salon_assistant (
            company_id bigint PRIMARY KEY REFERENCES companies (id) ON DELETE CASCADE,
            information jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(information) = 'object'),
            service_words jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(service_words) = 'object'),
            master_words jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(master_words) = 'object'),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TRIGGER salon_assistant_touch_updated_at BEFORE UPDATE ON salon_assistant
            FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();
        ALTER TABLE messages DROP CONSTRAINT messages_status_check,
            ADD CONSTRAINT messages_status_check
            CHECK (status IN ('pending', 'answered', 'merged', 'failed', 'held'));
        ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check,
            ADD CONSTRAINT alerts_kind_check
            CHECK (kind IN ('health', 'whatsapp_session', 'backup', 'drill', 'mass_delete', 'handover', 'late'));
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE salon_assistant;
        UPDATE messages SET status = 'answered' WHERE status = 'held';
        ALTER TABLE messages DROP CONSTRAINT messages_status_check,
            ADD CONSTRAINT messages_status_check CHECK (status IN ('pending', 'answered', 'merged', 'failed'));
        DELETE FROM alerts WHERE kind IN ('handover', 'late');
        ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check,
            ADD CONSTRAINT alerts_kind_check
            CHECK (kind IN ('health', 'whatsapp_session', 'backup', 'drill', 'mass_delete'));
        """
    )
