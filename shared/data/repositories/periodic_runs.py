"""`periodic_runs`: the journal of jobs that run once per period (key cleanup, nightly backup, retention, the
weekly drill). A scheduled run claims its job's period by inserting its `running` row under a unique partial
index (one `running` or `done` scheduled run per job and period), so two senders can never both run it."""

from __future__ import annotations

from shared.core.db import run
from shared.data.repository import Repository, Row


class PeriodicRunRepository(Repository):
    table = "periodic_runs"
    columns = frozenset(
        {
            "id",
            "job",
            "period",
            "trigger",
            "status",
            "started_at",
            "finished_at",
            "stale_after",
            "worker",
            "task_id",
            "note",
        }
    )

    def give_up_stale(self, job: str, period: str) -> list[Row]:
        """Scheduled runs of the period still `running` past their time limit are dead (the worker type's hard
        limit killed them by then, or their worker died): marked failed, so the period can be claimed again."""
        return run(
            "UPDATE periodic_runs SET status = 'failed', finished_at = now(),"
            " note = 'presumed dead: still running at its time limit (' || stale_after || ')'"
            " WHERE job = %s AND period = %s AND trigger = 'schedule' AND status = 'running' AND stale_after < now()"
            " RETURNING id, worker, started_at",
            (job, period),
            table=self.table,
            operation="update",
        )

    def claim(self, job: str, period: str, *, worker: str, task_id: str | None, time_limit: float) -> int | None:
        """The period's scheduled run, `running` from now: its id, or None when a run of the period is already
        running or done (the unique index decides, in this one statement, whoever else is claiming)."""
        rows = run(
            "INSERT INTO periodic_runs (job, period, trigger, status, worker, task_id, stale_after)"
            " VALUES (%s, %s, 'schedule', 'running', %s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (job, period) WHERE trigger = 'schedule' AND status IN ('running', 'done') DO NOTHING"
            " RETURNING id",
            (job, period, worker, task_id, time_limit),
            table=self.table,
            operation="insert",
        )
        return rows[0]["id"] if rows else None

    def holder(self, job: str, period: str) -> Row | None:
        """The scheduled run that holds the period (running or done), if any."""
        return self.find_one({"job": job, "period": period, "trigger": "schedule", "status__in": ["running", "done"]})

    def record_skipped(self, job: str, period: str, *, worker: str, task_id: str | None, note: str) -> int:
        """A scheduled run that did not run because its period is held: kept with when and why."""
        rows = run(
            "INSERT INTO periodic_runs (job, period, trigger, status, finished_at, worker, task_id, note)"
            " VALUES (%s, %s, 'schedule', 'skipped', now(), %s, %s, %s) RETURNING id",
            (job, period, worker, task_id, note[:2000]),
            table=self.table,
            operation="insert",
        )
        return rows[0]["id"]

    def start_manual(self, job: str, period: str, *, worker: str) -> int:
        """An operator's run by hand: journaled, never guarded (it holds no period)."""
        return self.insert({"job": job, "period": period, "trigger": "manual", "status": "running", "worker": worker})[
            "id"
        ]

    def finish(self, run_id: int, status: str, note: str | None = None) -> bool:
        """A running run ended (`done` or `failed`); False when it was no longer running (given up as stale)."""
        rows = run(
            "UPDATE periodic_runs SET status = %s, finished_at = now(), note = %s"
            " WHERE id = %s AND status = 'running' RETURNING id",
            (status, None if note is None else note[:2000], run_id),
            table=self.table,
            operation="update",
        )
        return bool(rows)

    def of_job(self, job: str, period: str | None = None) -> list[Row]:
        """A job's runs, oldest first (of one period, when given)."""
        filters = {"job": job} if period is None else {"job": job, "period": period}
        return self.find_many(filters, order_by=["id"])
