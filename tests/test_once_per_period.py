"""Jobs that must run once per period run once, whatever beat does (workers/periodic.py): the same scheduled job
sent twice, by `send_task` or by a beat killed right after sending it and started again, runs once and the
second message is journaled `skipped`; a run dead past its time limit gives its period back; an operator's run
by hand is never blocked, only journaled."""

from __future__ import annotations

import os
import re
import shelve
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import celery
import psycopg
import pytest
from celery.beat import ScheduleEntry
from celery.schedules import crontab

from beat_schedule import build_beat_schedule
from shared.core.kombu_contract import queue_key
from shared.core.periods import (
    BACKUP_NIGHTLY,
    KEYS_CLEANUP,
    ONCE_PER_PERIOD,
    RESTORE_DRILL,
    RETENTION_NIGHTLY,
    Per,
    PeriodicJob,
)
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import Settings
from shared.core.topology import Queue, TaskName
from shared.data.repositories.periodic_runs import PeriodicRunRepository
from tests.support.processes import ROOT, FleetProcess, running_worker, wait_for_idle, wait_until
from tests.support.raw_broker import envelope, push
from workers.app import app

MOSCOW = ZoneInfo("Europe/Moscow")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


def journal(db: psycopg.Connection, job: PeriodicJob) -> list[tuple[str, str, str, str | None]]:
    """(trigger, status, period, note) of every run of `job`, oldest first."""
    return db.execute(
        "SELECT trigger, status, period, note FROM periodic_runs WHERE job = %s ORDER BY id", (job.name,)
    ).fetchall()


def period_now(job: PeriodicJob, settings: Settings) -> str:
    """The period a message sent now belongs to; a test that would straddle one of the job's ticks is skipped."""
    zone = ZoneInfo(settings.timezone)
    now = datetime.now(UTC)
    if job.latest_tick(now + timedelta(minutes=3), zone) != job.latest_tick(now, zone):
        pytest.skip(f"{job.name} ticks within 3 minutes: the test's messages could fall in two periods")
    return job.period_at(now, zone)


@pytest.fixture
def pool(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """This process's pool open for the repositories; yields the inspecting connection."""
    open_process_pool(role="test", max_size=4, wait=True)
    yield db
    close_process_pool()


# ---- the period of a run -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "moment", "period"),
    [
        (KEYS_CLEANUP, at("2026-12-09T02:59:59"), "2026-12-08"),  # before 03:00 it is still yesterday's run
        (KEYS_CLEANUP, at("2026-12-09T03:00:00"), "2026-12-09"),
        (KEYS_CLEANUP, datetime(2026, 12, 9, 0, 30, tzinfo=UTC), "2026-12-09"),  # 03:30 in Moscow
        (KEYS_CLEANUP, datetime(2026, 12, 8, 23, 30, tzinfo=UTC), "2026-12-08"),  # 02:30 in Moscow
        (BACKUP_NIGHTLY, at("2026-12-09T23:59:00"), "2026-12-09"),
        (RETENTION_NIGHTLY, at("2026-12-09T04:29:00"), "2026-12-08"),
        (RESTORE_DRILL, at("2026-12-13T06:00:00"), "2026-W50"),  # a Sunday: the last day of its ISO week
        (RESTORE_DRILL, at("2026-12-14T10:00:00"), "2026-W50"),  # Monday: still last Sunday's drill
        (RESTORE_DRILL, at("2026-12-13T05:59:00"), "2026-W49"),
        (RESTORE_DRILL, at("2027-01-03T07:00:00"), "2026-W53"),
    ],
)
def test_a_run_belongs_to_the_period_of_the_latest_tick_at_or_before_it_was_sent(
    job: PeriodicJob, moment: datetime, period: str
) -> None:
    assert job.period_at(moment, MOSCOW) == period


def test_beat_schedules_each_guarded_job_at_the_times_the_guard_reads(settings: Settings) -> None:
    table = build_beat_schedule(settings)
    assert set(ONCE_PER_PERIOD) == {
        TaskName.KEYS_CLEANUP,
        TaskName.BACKUP,
        TaskName.APPLY_RETENTION,
        TaskName.RESTORE_DRILL,
    }
    for job in ONCE_PER_PERIOD.values():
        assert table[job.name]["task"] == job.task.value
        assert table[job.name]["schedule"] is job.schedule


def test_a_schedule_that_ticks_twice_in_its_period_is_refused() -> None:
    with pytest.raises(ValueError, match="does not tick exactly once per day"):
        PeriodicJob("twice", TaskName.BACKUP, crontab(minute=0, hour="3,15"), Per.DAY)
    with pytest.raises(ValueError, match="does not tick exactly once per week"):
        PeriodicJob("daily", TaskName.RESTORE_DRILL, crontab(minute=0, hour=6), Per.WEEK)


# ---- the journal's one claim -------------------------------------------------------------------------


def test_one_scheduled_run_per_period_holds_it_and_a_failed_one_gives_it_back(pool: psycopg.Connection) -> None:
    runs = PeriodicRunRepository()
    first = runs.claim("keys-cleanup", "2026-12-09", worker="a", task_id="t1", time_limit=300)
    assert first is not None
    assert runs.claim("keys-cleanup", "2026-12-09", worker="b", task_id="t2", time_limit=300) is None  # running
    assert runs.claim("keys-cleanup", "2026-12-10", worker="b", task_id="t3", time_limit=300) is not None
    assert runs.finish(first, "failed", "boom")
    again = runs.claim("keys-cleanup", "2026-12-09", worker="b", task_id="t4", time_limit=300)
    assert again is not None  # a failed run holds nothing: the period can be run again
    assert runs.finish(again, "done")
    assert runs.claim("keys-cleanup", "2026-12-09", worker="c", task_id="t5", time_limit=300) is None  # done
    manual = runs.start_manual("keys-cleanup", "2026-12-09", worker="fleet keys cleanup on host")
    assert runs.finish(manual, "done")  # a run by hand neither needs nor holds the period
    with pytest.raises(psycopg.errors.UniqueViolation):  # the index itself, whoever writes
        pool.execute(
            "INSERT INTO periodic_runs (job, period, trigger, status, worker) "
            "VALUES ('keys-cleanup', '2026-12-09', 'schedule', 'running', 'x')"
        )


# ---- real workers: the same scheduled job sent twice ---------------------------------------------------


def cleanups_received(output: str) -> int:
    return len(re.findall(r"Task workers\.keys\.cleanup\[[0-9a-f-]+\] received", output))


@pytest.mark.slow
def test_key_cleanup_and_retention_sent_twice_run_once_and_the_second_is_journaled_skipped(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path, settings: Settings
) -> None:
    periods = {job: period_now(job, settings) for job in (KEYS_CLEANUP, RETENTION_NIGHTLY)}
    with running_worker("keys", fleet_env, tmp_path) as worker:
        sent = {job: [app.send_task(job.task.value).id for _ in range(2)] for job in periods}
        wait_for_idle([worker], fleet_env["REDIS_URL"], (queue_key(Queue.MAINTENANCE),), at_least=4)
    assert db.execute("SELECT count(*) FROM key_cleanup_runs").fetchone()[0] == 1, worker.output()
    for job, period in periods.items():
        rows = db.execute(
            "SELECT trigger, status, period, task_id, worker, finished_at IS NOT NULL, note FROM periodic_runs"
            " WHERE job = %s ORDER BY id",
            (job.name,),
        ).fetchall()
        assert [row[:5] for row in rows] == [
            ("schedule", "done", period, sent[job][0], worker.node),  # type: ignore[attr-defined]
            ("schedule", "skipped", period, sent[job][1], worker.node),  # type: ignore[attr-defined]
        ], worker.output()
        assert rows[1][5], "a skipped run is finished when it is recorded"
        assert re.match(r"run \d+ of this period is done \(", rows[1][6]), rows[1][6]
        assert f"{job.name} for {period} skipped: run" in worker.output()


@pytest.mark.slow
def test_the_nightly_backup_and_the_drill_sent_twice_run_once(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path, settings: Settings
) -> None:
    """Twice the backup would prune by the second backup's light; the guard leaves one backup per night."""
    periods = {job: period_now(job, settings) for job in (BACKUP_NIGHTLY, RESTORE_DRILL)}
    env = {**fleet_env, "FLEET_BACKUP__DIRECTORY": str(tmp_path / "backups")}
    with running_worker("backups", env, tmp_path) as worker:
        for _ in range(2):
            app.send_task(BACKUP_NIGHTLY.task.value)
        wait_for_idle([worker], env["REDIS_URL"], (queue_key(Queue.BACKUPS),), at_least=2, timeout=180)
        for _ in range(2):
            app.send_task(RESTORE_DRILL.task.value)
        wait_for_idle([worker], env["REDIS_URL"], (queue_key(Queue.BACKUPS),), at_least=4, timeout=180)
    assert db.execute("SELECT status FROM backups").fetchall() == [("verified",)], worker.output()
    assert len(list((tmp_path / "backups").glob("*.dump.zst"))) == 1
    for job, period in periods.items():
        assert [row[:3] for row in journal(db, job)] == [
            ("schedule", "done", period),
            ("schedule", "skipped", period),
        ], worker.output()
    drills = db.execute("SELECT status FROM health_checks WHERE check_name = 'backup_drill'").fetchall()
    assert drills == [("healthy",)]


@pytest.mark.slow
def test_a_run_dead_past_its_time_limit_gives_its_period_back_and_a_live_one_does_not(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path, settings: Settings
) -> None:
    cleanup_period = period_now(KEYS_CLEANUP, settings)
    retention_period = period_now(RETENTION_NIGHTLY, settings)
    # A key cleanup whose worker died an hour ago (its 300 s limit long past), and a retention still within it.
    db.execute(
        "INSERT INTO periodic_runs (job, period, trigger, status, started_at, stale_after, worker, task_id)"
        " VALUES (%s, %s, 'schedule', 'running', now() - interval '1 hour', now() - interval '55 minutes',"
        " 'keys@dead', 'lost-task'), (%s, %s, 'schedule', 'running', now(), now() + interval '5 minutes',"
        " 'keys@alive', 'live-task')",
        (KEYS_CLEANUP.name, cleanup_period, RETENTION_NIGHTLY.name, retention_period),
    )
    with running_worker("keys", fleet_env, tmp_path) as worker:
        app.send_task(KEYS_CLEANUP.task.value)
        app.send_task(RETENTION_NIGHTLY.task.value)
        wait_for_idle([worker], fleet_env["REDIS_URL"], (queue_key(Queue.MAINTENANCE),), at_least=2)
    cleanup = journal(db, KEYS_CLEANUP)
    assert [row[:3] for row in cleanup] == [
        ("schedule", "failed", cleanup_period),
        ("schedule", "done", cleanup_period),
    ], worker.output()
    assert cleanup[0][3] is not None
    assert cleanup[0][3].startswith("presumed dead: still running at its time limit")
    assert db.execute("SELECT count(*) FROM key_cleanup_runs").fetchone()[0] == 1
    retention = journal(db, RETENTION_NIGHTLY)
    assert [row[:3] for row in retention] == [
        ("schedule", "running", retention_period),
        ("schedule", "skipped", retention_period),
    ], worker.output()
    assert retention[1][3] is not None
    assert "is running on keys@alive" in retention[1][3]


@pytest.mark.slow
def test_a_message_belongs_to_the_period_it_was_sent_in_not_the_one_it_runs_in(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path, settings: Settings
) -> None:
    """A message stamped when yesterday's cleanup was due (a redelivery, a backlog) is yesterday's run: it runs
    once for yesterday, whatever today's run did, and its twin is skipped."""
    today = period_now(KEYS_CLEANUP, settings)
    tick = KEYS_CLEANUP.latest_tick(datetime.now(UTC), ZoneInfo(settings.timezone))
    yesterday_sent = (tick - timedelta(days=1) + timedelta(minutes=5)).timestamp()
    yesterday = KEYS_CLEANUP.period_of_tick(tick - timedelta(days=1))
    queue = queue_key(Queue.MAINTENANCE)
    with running_worker("keys", fleet_env, tmp_path) as worker:
        app.send_task(KEYS_CLEANUP.task.value)
        for _ in range(2):
            stamped = envelope(KEYS_CLEANUP.task.value, queue=queue, headers={"fleet_sent_at": yesterday_sent})
            push(fleet_env["REDIS_URL"], queue, stamped)
        wait_for_idle([worker], fleet_env["REDIS_URL"], (queue,), at_least=3)
    assert db.execute("SELECT count(*) FROM key_cleanup_runs").fetchone()[0] == 2, worker.output()
    assert [row[:3] for row in journal(db, KEYS_CLEANUP)] == [
        ("schedule", "done", today),
        ("schedule", "done", yesterday),
        ("schedule", "skipped", yesterday),
    ], worker.output()


def test_an_operator_run_by_hand_is_never_blocked_and_is_journaled(
    pool: psycopg.Connection, fleet_env: dict[str, str], settings: Settings
) -> None:
    period = period_now(KEYS_CLEANUP, settings)
    runs = PeriodicRunRepository()
    scheduled = runs.claim(KEYS_CLEANUP.name, period, worker="keys@host", task_id="t", time_limit=300)
    assert scheduled is not None
    assert runs.finish(scheduled, "done")
    for args in (["keys", "cleanup"], ["keys", "cleanup", "--dry-run"]):
        result = subprocess.run(
            [sys.executable, "-m", "workers.cli", *args], cwd=ROOT, env=fleet_env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    assert pool.execute("SELECT dry_run FROM key_cleanup_runs ORDER BY id").fetchall() == [(False,), (True,)]
    rows = pool.execute(
        "SELECT trigger, status, period, worker FROM periodic_runs WHERE job = %s ORDER BY id", (KEYS_CLEANUP.name,)
    ).fetchall()
    assert rows[0][:3] == ("schedule", "done", period)
    assert rows[1][:3] == ("manual", "done", period)  # the dry run deletes nothing and is not journaled
    assert rows[1][3].startswith("fleet keys cleanup on ")
    assert len(rows) == 2


# ---- real beat: killed right after sending a daily job, and started again ------------------------------


@pytest.mark.slow
def test_a_beat_killed_right_after_sending_a_daily_job_and_started_again_does_not_run_it_twice(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path, settings: Settings
) -> None:
    """The report: beat's schedule file is written only every few minutes, so a beat SIGKILLed just after sending
    the key cleanup forgets it sent it, and the next beat sends it again at once."""
    zone = ZoneInfo(settings.timezone)
    period = period_now(KEYS_CLEANUP, settings)
    tick = KEYS_CLEANUP.latest_tick(datetime.now(UTC), zone)
    before = KEYS_CLEANUP.latest_tick(tick - timedelta(minutes=1), zone)  # the cleanup last ran the tick before
    # Beat's state as it would be on disk: the cleanup due, and a job beat sends first (nothing consumes its
    # queue here), so that beat has written its file once before it sends the cleanup, as a long-running beat has.
    state = Path(fleet_env["FLEET_STATE_DIR"])
    state.mkdir(mode=0o700, parents=True)
    schedule_file = str(state / "celerybeat-schedule")
    with shelve.open(schedule_file) as store:
        store["entries"] = {
            "yclients-sweep": ScheduleEntry(
                "yclients-sweep", TaskName.YCLIENTS_SWEEP.value, before, schedule=timedelta(seconds=30)
            ),
            KEYS_CLEANUP.name: ScheduleEntry(
                KEYS_CLEANUP.name, KEYS_CLEANUP.task.value, before, 1, KEYS_CLEANUP.schedule
            ),
        }
        store.update({"__version__": celery.__version__, "tz": settings.timezone, "utc_enabled": True})

    with running_worker("keys", fleet_env, tmp_path) as worker:
        beat = FleetProcess(["beat", "--loglevel", "INFO"], fleet_env, tmp_path / "beat-0.log")
        try:
            wait_until(lambda: cleanups_received(worker.output()) == 1, 60, "the first beat's key cleanup")
            os.kill(beat.pid, signal.SIGKILL)
        finally:
            beat.stop()
        first_beat = beat.output()
        with shelve.open(schedule_file, flag="r") as store:  # what the killed beat left on disk
            remembered = store["entries"][KEYS_CLEANUP.name].last_run_at
        assert first_beat.index("Sending due task yclients-sweep") < first_beat.index("Sending due task keys-cleanup")
        assert remembered == before, "the killed beat's file should not know it sent the cleanup"

        beat = FleetProcess(["beat", "--loglevel", "INFO"], fleet_env, tmp_path / "beat-1.log")
        try:
            wait_until(lambda: cleanups_received(worker.output()) == 2, 60, "the second beat's key cleanup")
        finally:
            assert beat.stop() == 0, beat.output()
        assert "Sending due task keys-cleanup" in beat.output()
        wait_for_idle([worker], fleet_env["REDIS_URL"], (queue_key(Queue.MAINTENANCE),), at_least=2)
    assert db.execute("SELECT count(*) FROM key_cleanup_runs").fetchone()[0] == 1, "the cleanup ran twice"
    assert [row[:3] for row in journal(db, KEYS_CLEANUP)] == [
        ("schedule", "done", period),
        ("schedule", "skipped", period),
    ], worker.output()
