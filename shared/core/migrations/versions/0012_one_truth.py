"""One truth per booking: endings that say where the booking stands in YClients, repairs that are recorded, and
walks that read less than YClients claimed.

- `bookings.crm_state` gains `failed` (the fleet gave up carrying the booking to YClients: YClients holds no
  record of it, and the local slot is free) and `vanished` (the record was deleted in YClients while a change to
  it was on its way: the local booking no longer holds the time either).
- `crm_repairs`: every disagreement the reconciliation found between a local booking and its YClients record,
  and what it did about it (`fleet crm`, `/health/crm`).
- `sync_runs.status` gains `partial`: the walk ended with fewer rows than YClients said there were (a server
  that ignores `page`, a `total_count` above what the pages hold). The run saved what it read, proves nothing
  about the rest, and is not a success: the freshness of the entity does not move.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE bookings DROP CONSTRAINT bookings_crm_state_check;
        ALTER TABLE bookings ADD CONSTRAINT bookings_crm_state_check
            CHECK (crm_state IN ('pending', 'synced', 'refused', 'failed', 'vanished'));

        CREATE TABLE crm_repairs (
            id              bigserial PRIMARY KEY,
            company_id      bigint NOT NULL CHECK (company_id > 0),
            booking_id      bigint REFERENCES bookings (id) ON DELETE SET NULL,
            record_id       bigint,
            found           text NOT NULL CHECK (length(found) BETWEEN 1 AND 200),
            repair          text NOT NULL CHECK (length(repair) BETWEEN 1 AND 500),
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX crm_repairs_recent ON crm_repairs (created_at DESC);

        ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
        ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check
            CHECK (status IN ('running', 'succeeded', 'partial', 'failed'));
        """
    )


def downgrade() -> None:
    op.execute(
        """
        UPDATE sync_runs SET status = 'failed' WHERE status = 'partial';
        ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
        ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check
            CHECK (status IN ('running', 'succeeded', 'failed'));

        DROP TABLE crm_repairs;

        UPDATE bookings SET crm_state = 'refused' WHERE crm_state IN ('failed', 'vanished');
        ALTER TABLE bookings DROP CONSTRAINT bookings_crm_state_check;
        ALTER TABLE bookings ADD CONSTRAINT bookings_crm_state_check
            CHECK (crm_state IN ('pending', 'synced', 'refused'));
        """
    )
