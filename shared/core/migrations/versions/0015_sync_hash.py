"""`sync_hash` on the tables the YClients sync writes through COPY and merge, and `sync_runs.rows_unchanged`.

- `companies`, `services`, `staff`, `clients`, `bookings` gain `sync_hash bigint`: a hash of the row exactly as
  the sync's mapping produced it before validation (shared/data/sync_hashes.py). A sync page whose row hashes
  to the stored value is skipped before validation: the row is already what the sync would write.
- A trigger on each forgets the hash (sets it NULL) on any UPDATE that does not itself set a new one: the fleet's
  own writes (a booking made or moved by the assistant, a webhook's cancel, a row marked deleted because it
  vanished upstream, an operator's SQL) never carry a hash, so the next sync rewrites that row. Only the sync's
  merge sets a hash, and it sets a different one whenever it writes (an equal hash is skipped before the merge).
- `sync_runs.rows_unchanged`: rows a run skipped because their hash matched.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

HASHED_TABLES = ("companies", "services", "staff", "clients", "bookings")


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION fleet_forget_sync_hash() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.sync_hash := NULL;
            RETURN NEW;
        END
        $$;
        ALTER TABLE sync_runs ADD COLUMN rows_unchanged integer NOT NULL DEFAULT 0;
        """
    )
    for table in HASHED_TABLES:
        op.execute(
            f"""
            ALTER TABLE {table} ADD COLUMN sync_hash bigint;
            CREATE TRIGGER {table}_forget_sync_hash BEFORE UPDATE ON {table} FOR EACH ROW
                WHEN (OLD.sync_hash IS NOT NULL AND NEW.sync_hash IS NOT DISTINCT FROM OLD.sync_hash)
                EXECUTE FUNCTION fleet_forget_sync_hash();
            """
        )


def downgrade() -> None:
    for table in HASHED_TABLES:
        op.execute(
            f"DROP TRIGGER IF EXISTS {table}_forget_sync_hash ON {table};"
            f" ALTER TABLE {table} DROP COLUMN IF EXISTS sync_hash;"
        )
    op.execute(
        "DROP FUNCTION IF EXISTS fleet_forget_sync_hash(); ALTER TABLE sync_runs DROP COLUMN IF EXISTS rows_unchanged;"
    )
