"""Dead letters an operator can act on: `fleet dead-letters` replays or discards a letter and keeps what it did.

- `dead_letters.history`: every replay and discard of the letter, oldest first, as JSON objects (`at`, `by`,
  `action`, `outcome`, `detail`, `note`). A refused or failed replay is kept there too.
- `dead_letters.replayed_at`: set when a replay handed the letter back to the fleet (or found its work done
  already); a second replay then does nothing unless asked to (`--again`).
- `dead_letters.discarded_at`: an operator decided the letter needs nothing more (the note is in the history).
  Letters are never deleted here: retention deletes old ones by `created_at`, whatever their state.
- an index on `created_at`, for listing by time and for retention's scan.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE dead_letters
            ADD COLUMN history jsonb NOT NULL DEFAULT '[]'::jsonb
                CONSTRAINT dead_letters_history_check CHECK (jsonb_typeof(history) = 'array'),
            ADD COLUMN replayed_at timestamptz,
            ADD COLUMN discarded_at timestamptz;
        CREATE INDEX dead_letters_created_idx ON dead_letters (created_at);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX dead_letters_created_idx;
        ALTER TABLE dead_letters DROP COLUMN discarded_at, DROP COLUMN replayed_at, DROP COLUMN history;
        """
    )
