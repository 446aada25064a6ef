"""Work rows: the four tables of work carried out after its change commits live one life, in one vocabulary.

`outbox`, `crm_operations`, `alerts` and `yclients_webhook_events` each hold `status` pending → done | failed,
`attempts`, `next_attempt_at` (due time, pushed ahead by a claim's lease), `last_error` and `finished_at`
(shared/data/work_rows.py). Before, replies and alerts were `sent`, alerts `given_up`, CRM operations also
`refused`, and webhook events had no status at all (`processed_at` and `error`).

- `outbox`: sent → done; `sent_at` becomes `finished_at`, set for a given-up reply too (its last lease's end,
  the nearest the table knew); a partial index for a chat's pending replies, which the per-chat order reads.
- `crm_operations`: refused → done, the refusal kept at the head of `outcome` ("refused: …"): YClients
  answered, nothing is left to do, and the booking's own `crm_state` says refused.
- `alerts`: sent → done, given_up → failed; `sent_at` becomes `finished_at` (a given-up alert's
  `next_attempt_at` was its give-up time).
- `yclients_webhook_events`: `status`, `attempts` and `next_attempt_at` added, `error` becomes `last_error`,
  `processed_at` becomes `finished_at`; a processed event is done (failed when it kept an error), counted as
  tried once; an unprocessed one pending and due at once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
        ALTER TABLE outbox RENAME COLUMN sent_at TO finished_at;
        UPDATE outbox SET status = 'done' WHERE status = 'sent';
        UPDATE outbox SET finished_at = next_attempt_at WHERE status = 'failed' AND finished_at IS NULL;
        ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN ('pending', 'done', 'failed'));
        CREATE INDEX outbox_chat_pending ON outbox (company_id, chat_id, id) WHERE status = 'pending';

        ALTER TABLE crm_operations DROP CONSTRAINT crm_operations_status_check;
        UPDATE crm_operations SET status = 'done', outcome = 'refused: ' || coalesce(outcome, '')
            WHERE status = 'refused';
        ALTER TABLE crm_operations ADD CONSTRAINT crm_operations_status_check
            CHECK (status IN ('pending', 'done', 'failed'));

        ALTER TABLE alerts DROP CONSTRAINT alerts_status_check;
        ALTER TABLE alerts RENAME COLUMN sent_at TO finished_at;
        UPDATE alerts SET status = 'done' WHERE status = 'sent';
        UPDATE alerts SET status = 'failed', finished_at = next_attempt_at WHERE status = 'given_up';
        ALTER TABLE alerts ADD CONSTRAINT alerts_status_check CHECK (status IN ('pending', 'done', 'failed'));

        ALTER TABLE yclients_webhook_events RENAME COLUMN processed_at TO finished_at;
        ALTER TABLE yclients_webhook_events RENAME COLUMN error TO last_error;
        ALTER TABLE yclients_webhook_events
            ADD COLUMN status text NOT NULL DEFAULT 'pending',
            ADD COLUMN attempts integer NOT NULL DEFAULT 0,
            ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now();
        UPDATE yclients_webhook_events
           SET status = CASE WHEN last_error IS NULL THEN 'done' ELSE 'failed' END, attempts = 1,
               next_attempt_at = finished_at
         WHERE finished_at IS NOT NULL;
        UPDATE yclients_webhook_events SET next_attempt_at = received_at WHERE status = 'pending';
        ALTER TABLE yclients_webhook_events ADD CONSTRAINT yclients_webhook_events_status_check
            CHECK (status IN ('pending', 'done', 'failed'));
        CREATE INDEX yclients_webhook_events_due ON yclients_webhook_events (next_attempt_at)
            WHERE status = 'pending';
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX yclients_webhook_events_due;
        ALTER TABLE yclients_webhook_events DROP CONSTRAINT yclients_webhook_events_status_check;
        UPDATE yclients_webhook_events SET last_error = NULL WHERE status = 'pending';
        ALTER TABLE yclients_webhook_events DROP COLUMN status, DROP COLUMN attempts, DROP COLUMN next_attempt_at;
        ALTER TABLE yclients_webhook_events RENAME COLUMN last_error TO error;
        ALTER TABLE yclients_webhook_events RENAME COLUMN finished_at TO processed_at;

        ALTER TABLE alerts DROP CONSTRAINT alerts_status_check;
        UPDATE alerts SET status = 'given_up', finished_at = NULL WHERE status = 'failed';
        UPDATE alerts SET status = 'sent' WHERE status = 'done';
        ALTER TABLE alerts RENAME COLUMN finished_at TO sent_at;
        ALTER TABLE alerts ADD CONSTRAINT alerts_status_check CHECK (status IN ('pending', 'sent', 'given_up'));

        ALTER TABLE crm_operations DROP CONSTRAINT crm_operations_status_check;
        UPDATE crm_operations SET status = 'refused', outcome = nullif(substr(outcome, length('refused: ') + 1), '')
            WHERE status = 'done' AND outcome LIKE 'refused: %';
        ALTER TABLE crm_operations ADD CONSTRAINT crm_operations_status_check
            CHECK (status IN ('pending', 'done', 'refused', 'failed'));

        DROP INDEX outbox_chat_pending;
        ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
        UPDATE outbox SET finished_at = NULL WHERE status = 'failed';
        UPDATE outbox SET status = 'sent' WHERE status = 'done';
        ALTER TABLE outbox RENAME COLUMN finished_at TO sent_at;
        ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN ('pending', 'sent', 'failed'));
        """
    )
