"""Beat drives the heartbeat end to end; errors and cron check-ins reach Sentry without personal data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sentry_sdk

from shared.observability.sentry import scrub_text
from tests.support.processes import FleetProcess, running_worker, wait_until
from tests.support.sentry_server import sentry_stand_in
from workers.app import app


def test_scrub_masks_phones_and_emails_but_keeps_ids() -> None:
    text = "client +7 (911) 234-56-78 / 79112345678 / anna@example.ru failed for company 962302"
    scrubbed = scrub_text(text)
    assert "234-56-78" not in scrubbed
    assert "79112345678" not in scrubbed
    assert "anna@" not in scrubbed
    assert "962302" in scrubbed


def test_events_carry_tags_and_no_personal_data(recorded_events: list[dict[str, Any]]) -> None:
    name = "".join(["Ан", "на"])  # built at run time so the source line shown in the event does not hold it
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("table", "clients")
        scope.set_extra("celery-job", {"task_name": "t", "args": [name, "+79112345678"], "kwargs": {}})
        scope.set_user({"id": "1", "phone": "+79112345678"})
        try:
            raise ValueError("cannot upsert client 79112345678 (anna@example.ru)")
        except ValueError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush()
    assert len(recorded_events) == 1
    event = recorded_events[0]
    dumped = json.dumps(event, ensure_ascii=False)
    assert "79112345678" not in dumped
    assert "anna@example.ru" not in dumped
    assert name not in dumped
    assert event["tags"]["component"] == "test-component"
    assert event["tags"]["table"] == "clients"
    assert "user" not in event


@pytest.mark.slow
def test_a_failing_task_reaches_sentry_from_the_worker_with_tags(
    fleet_env: dict[str, str], migrated: str, tmp_path: Path
) -> None:
    with sentry_stand_in() as (dsn, recorded):
        env = {
            **fleet_env,
            "SENTRY_DSN": dsn,
            # A database that does not exist: the task's pool times out and the error must be reported.
            "DATABASE_URL": fleet_env["DATABASE_URL"].rsplit("/", 1)[0] + "/fleet_missing_test",
            "FLEET_POOL__TIMEOUT": "1",
        }
        with running_worker("inbound", env, tmp_path):
            result = app.send_task("workers.inbound.ping", kwargs={"hold_seconds": 0.0})
            with pytest.raises(Exception, match=r"PoolTimeout|couldn't get a connection"):
                result.get(timeout=30)
            events = wait_until(lambda: recorded.of_type("event"), 15, "an error event at the Sentry stand-in")
    event = events[0]
    assert event["tags"]["component"] == "inbound"
    assert event["tags"]["queue"] == "inbound"
    assert event["tags"]["operation"] == "workers.inbound.ping"
    assert "args" not in event.get("extra", {}).get("celery-job", {})


@pytest.mark.slow
def test_beat_heartbeat_reaches_postgres_and_is_monitored_as_a_cron(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """Runs about a minute: Sentry Crons accepts whole-minute intervals only, so the real default is used."""
    with sentry_stand_in() as (dsn, recorded):
        env = {**fleet_env, "SENTRY_DSN": dsn, "FLEET_HEARTBEAT_SECONDS": "60"}
        with running_worker("keys", env, tmp_path):
            beat = FleetProcess(["beat", "--loglevel", "INFO"], env, tmp_path / "beat.log")
            try:
                check_ins = wait_until(
                    lambda: [
                        c
                        for c in recorded.of_type("check_in")
                        if c.get("status") == "ok" and c.get("monitor_slug") == "health-heartbeat"
                    ],
                    90,
                    "an ok cron check-in for the heartbeat",
                )
            finally:
                assert beat.stop() == 0, beat.output()
    assert check_ins[0]["monitor_slug"] == "health-heartbeat"
    assert check_ins[0]["monitor_config"]["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}
    row = db.execute(
        "SELECT status, details->>'worker_type' FROM health_checks WHERE check_name = 'heartbeat' LIMIT 1"
    ).fetchone()
    assert row == ("healthy", "keys")
