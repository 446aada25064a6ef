"""Jobs that must run once per period run once, whatever beat does: the guard lives in the task, not in beat.

Beat alone cannot promise it: its schedule file is written only every few minutes, so a beat killed just after
sending a daily job sends it again when it starts; a second beat started by mistake sends everything twice; a
worker's crash brings a message back. So the task itself claims its job's period (shared/core/periods.py) in
`periodic_runs` before it works: a period that already has a scheduled run `running` or `done` is not run
again, and the run that found it so is journaled `skipped`, with when, where and why.

- A run still `running` past its worker type's hard time limit is dead (the limit killed it, or its worker
  died): the next run of the period marks it `failed` and claims the period itself.
- A `failed` run holds nothing: a later message of the same period (a redelivery, beat's re-send after its
  crash) runs the job again, so a failure can still be mended within its period.
- An operator's run by hand (`fleet backup`, `fleet keys cleanup`, `fleet drill`) is a deliberate extra run:
  never blocked, it is journaled with trigger `manual` and holds no period either.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from celery import Task

from shared.core.db import transaction
from shared.core.db_errors import DataLayerError
from shared.core.periods import ONCE_PER_PERIOD, PeriodicJob
from shared.core.settings import get_settings
from shared.core.topology import TaskName
from shared.data.repositories.periodic_runs import PeriodicRunRepository
from shared.data.repository import Row
from shared.observability.prometheus_metrics import SENT_AT_HEADER

log = logging.getLogger(__name__)

T = TypeVar("T")
CLAIM_TRIES = 3  # a holder that ends between our claim and our look at it frees the period: claim again


def sent_moment(request: Any) -> datetime:
    """When the message left its sender (every fleet process stamps it, beat included; a redelivery keeps it);
    now for a message without the stamp."""
    stamp = getattr(request, SENT_AT_HEADER, None)
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        return datetime.fromtimestamp(stamp, UTC)
    return datetime.now(UTC)


def _held_by(holder: Row) -> str:
    if holder["status"] == "running":
        return (
            f"run {holder['id']} of this period is running on {holder['worker']}"
            f" since {holder['started_at']:%Y-%m-%d %H:%M:%S %z} (task {holder['task_id']})"
        )
    return (
        f"run {holder['id']} of this period is done ({holder['worker']},"
        f" finished {holder['finished_at']:%Y-%m-%d %H:%M:%S %z})"
    )


def _claim(
    job: PeriodicJob, period: str, worker: str, task_id: str | None, time_limit: float
) -> tuple[int | None, str]:
    """The run's id, or None and why it is skipped (the skipped row written in the same transaction)."""
    runs = PeriodicRunRepository()
    with transaction():
        for dead in runs.give_up_stale(job.name, period):
            log.warning(
                "%s for %s: run %s (%s, started %s) is past its time limit; presumed dead, the period is claimed again",
                job.name,
                period,
                dead["id"],
                dead["worker"],
                dead["started_at"],
            )
        for _ in range(CLAIM_TRIES):
            run_id = runs.claim(job.name, period, worker=worker, task_id=task_id, time_limit=time_limit)
            if run_id is not None:
                return run_id, ""
            holder = runs.holder(job.name, period)
            if holder is not None:
                note = _held_by(holder)
                runs.record_skipped(job.name, period, worker=worker, task_id=task_id, note=note)
                return None, note
        note = f"the period was claimed and released {CLAIM_TRIES} times while this run tried to claim it"
        runs.record_skipped(job.name, period, worker=worker, task_id=task_id, note=note)
        return None, note


def _summary(result: Any) -> str | None:
    """What a done run leaves in its note: its task's figures, short."""
    if isinstance(result, dict):
        return ", ".join(f"{key}={value}" for key, value in result.items())[:500]
    return None if result is None else str(result)[:500]


@dataclass
class RunJournal:
    """A claimed (or manual) run's row while it works: `note` is what a done run leaves; `failure`, when set,
    ends the run failed without an exception (a drill that ran and did not pass)."""

    run_id: int
    note: str | None = None
    failure: str | None = None


@contextmanager
def journaled(run_id: int) -> Iterator[RunJournal]:
    """The run's row ends `done`, or `failed` with the error (which is raised on); a row the guard already gave
    up as stale stays failed. A run killed outright stays `running` until its time limit makes it stale."""
    journal = RunJournal(run_id)
    runs = PeriodicRunRepository()
    try:
        yield journal
    except BaseException as exc:
        try:
            runs.finish(run_id, "failed", f"{type(exc).__name__}: {exc}")
        except DataLayerError as journal_error:  # the job's own error is the one to raise
            log.error("periodic run %s not marked failed: %s", run_id, journal_error)
        raise
    ended = runs.finish(run_id, *(("failed", journal.failure) if journal.failure else ("done", journal.note)))
    if not ended:
        log.warning("periodic run %s ended after it was given up as stale; it stays failed", run_id)


def once_per_period(task: Task, work: Callable[[], T]) -> T | dict[str, Any]:
    """Run `work` if this scheduled run claims its job's period; otherwise it is skipped (journaled, logged)."""
    settings = get_settings()
    job = ONCE_PER_PERIOD[TaskName(task.name)]
    period = job.period_at(sent_moment(task.request), ZoneInfo(settings.timezone))
    worker = task.request.hostname or socket.gethostname()
    run_id, note = _claim(job, period, worker, task.request.id, job.time_limit(settings))
    if run_id is None:
        log.warning("%s for %s skipped: %s", job.name, period, note)
        return {"skipped": True, "job": job.name, "period": period, "reason": note}
    with journaled(run_id) as journal:
        result = work()
        journal.note = _summary(result)
    return result


@contextmanager
def by_hand(job: PeriodicJob, command: str) -> Iterator[RunJournal]:
    """An operator's run (`fleet backup`, ...): not guarded (a deliberate extra run), but journaled `manual` in
    the period it runs in, so the journal shows every run of the job."""
    period = job.period_at(datetime.now(UTC), ZoneInfo(get_settings().timezone))
    run_id = PeriodicRunRepository().start_manual(job.name, period, worker=f"{command} on {socket.gethostname()}")
    with journaled(run_id) as journal:
        yield journal
