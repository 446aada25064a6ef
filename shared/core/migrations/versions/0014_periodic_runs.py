"""`periodic_runs`: the journal of jobs that must run once per period (shared/core/periods.py).

- one row per run: `job` (beat's entry name), `period` (`2026-12-09`, or `2026-W50` for a weekly job),
  `trigger` (`schedule`: sent by beat, guarded; `manual`: an operator's `fleet backup`, journaled only),
  `status` (`running`, `done`, `failed`, `skipped`), `started_at`, `finished_at`, `worker` (node or host),
  `task_id`, `note` (why a run was skipped or failed), and `stale_after`: when a run still `running` is
  presumed dead (its start plus its worker type's hard time limit).
- a unique partial index: at most one scheduled run of a job and period is `running` or `done`. A run claims
  its period by inserting into it (INSERT ... ON CONFLICT DO NOTHING); failed and skipped runs stay outside.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-09
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE periodic_runs (
            id          bigserial PRIMARY KEY,
            job         text NOT NULL,
            period      text NOT NULL,
            trigger     text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
            status      text NOT NULL CHECK (status IN ('running', 'done', 'failed', 'skipped')),
            started_at  timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            stale_after timestamptz,
            worker      text NOT NULL,
            task_id     text,
            note        text,
            CHECK ((status = 'running') = (finished_at IS NULL))
        );
        CREATE UNIQUE INDEX periodic_runs_once_per_period ON periodic_runs (job, period)
            WHERE trigger = 'schedule' AND status IN ('running', 'done');
        CREATE INDEX periodic_runs_job_started_idx ON periodic_runs (job, started_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS periodic_runs")
