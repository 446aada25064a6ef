"""Alerts in the operators' Telegram chat, against a local stand-in of the Bot API: once per change, kept
while Telegram is down or throttling, given up (and shown in health) only after their attempts."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from ops.standins.telegram import TelegramStandIn
from shared.alerts.delivery import deliver_due, raise_alert
from shared.core.settings import AlertSettings, get_settings, load_settings
from shared.health.checks import check_outbox
from shared.health.report import build_report, store_and_alert
from tests.support.fake_tools import pg_dump_as_a_role_that_does_not_exist, real_program, wrapper
from tests.support.healthy_fleet import NAME, PHONE, make_healthy
from tests.support.seed import COMPANY


def make_due(db: psycopg.Connection) -> None:
    """The retry's wait, skipped: the next delivery run finds the alert due."""
    db.execute("UPDATE alerts SET next_attempt_at = now() WHERE status = 'pending'")


def test_a_health_change_is_told_once_and_so_is_its_recovery(
    salon: psycopg.Connection, telegram: TelegramStandIn
) -> None:
    make_healthy(salon)
    settings = load_settings(yclients={"company_ids": [COMPANY]})
    store_and_alert(build_report(settings))
    assert deliver_due().sent == 0, "a healthy fleet says nothing"

    salon.execute("UPDATE backups SET finished_at = now() - interval '60 hours'")
    store_and_alert(build_report(settings))
    store_and_alert(build_report(settings))  # still unhealthy: not news
    assert deliver_due().sent == 1
    salon.execute("UPDATE backups SET finished_at = now()")
    store_and_alert(build_report(settings))
    deliver_due()

    down, up = telegram.texts()
    assert down == "🔴 fleet health: backups: unhealthy (was healthy)\n• the newest verified backup is 60 h old"
    assert up == "🟢 fleet health: backups: healthy (was unhealthy)"
    assert all(personal not in down + up for personal in (PHONE, NAME))
    assert deliver_due().sent == 0


def test_telegram_down_or_throttling_delays_an_alert_but_never_loses_or_repeats_it(
    salon: psycopg.Connection, telegram: TelegramStandIn
) -> None:
    assert raise_alert("test:1", "backup", "🔴 nightly backup failed")
    assert not raise_alert("test:1", "backup", "🔴 nightly backup failed"), "one change, one alert"
    telegram.fail_next(1)
    assert deliver_due().retried == 1
    assert deliver_due().sent == 0, "a failed alert waits for its retry, it is not hammered"
    waited = salon.execute("SELECT extract(epoch FROM next_attempt_at - now()) FROM alerts").fetchone()[0]
    assert 5 < waited <= 10, "the first retry after FLEET_ALERTS__RETRY_BASE_SECONDS"

    make_due(salon)
    telegram.throttle_next(1, retry_after=120)
    assert deliver_due().retried == 1
    waited = salon.execute("SELECT extract(epoch FROM next_attempt_at - now()) FROM alerts").fetchone()[0]
    assert 115 < waited <= 120, "Telegram's retry_after wins over the shorter backoff"

    make_due(salon)
    assert deliver_due().sent == 1
    assert telegram.texts() == ["🔴 nightly backup failed"]
    assert salon.execute("SELECT status, attempts, last_error FROM alerts").fetchone() == ("done", 3, None)
    make_due(salon)
    assert deliver_due().sent == 0
    assert telegram.texts() == ["🔴 nightly backup failed"]


def test_an_alert_telegram_keeps_refusing_is_given_up_and_shown_in_health(
    salon: psycopg.Connection, telegram: TelegramStandIn
) -> None:
    os.environ["FLEET_ALERTS__TELEGRAM_CHAT_ID"] = "-100999"  # a chat the bot is not in
    os.environ["FLEET_ALERTS__MAX_ATTEMPTS"] = "2"
    get_settings.cache_clear()
    try:
        raise_alert("test:2", "drill", "🔴 restore drill failed")
        assert deliver_due().retried == 1
        assert check_outbox(get_settings()).details["alerts_pending"] == 1
        make_due(salon)
        assert deliver_due().given_up == 1
        status, error = salon.execute("SELECT status, last_error FROM alerts").fetchone()
        assert status == "failed"
        assert "400 Bad Request: chat not found" in error
        outbox = check_outbox(get_settings())
        assert outbox.status == "warning"
        assert "1 alerts could not be delivered to Telegram" in outbox.problems
    finally:
        os.environ.pop("FLEET_ALERTS__MAX_ATTEMPTS")
    assert telegram.texts() == []


def test_without_a_bot_token_nothing_is_stored_or_sent(salon: psycopg.Connection) -> None:
    assert not AlertSettings().enabled
    assert not raise_alert("test:3", "health", "🔴 something")
    assert deliver_due().sent == 0
    assert salon.execute("SELECT count(*) FROM alerts").fetchone()[0] == 0


def test_a_failed_nightly_backup_is_told_once_per_run(
    salon: psycopg.Connection, telegram: TelegramStandIn, tmp_path: Path
) -> None:
    from workers.backups import backup

    tools = tmp_path / "bin"
    pg_dump_as_a_role_that_does_not_exist(tools)
    wrapper(tools, "pg_restore", f'exec {real_program("pg_restore")} "$@"')
    os.environ["FLEET_BACKUP__PG_BIN_DIR"] = str(tools)
    os.environ["FLEET_BACKUP__DIRECTORY"] = str(tmp_path / "backups")
    get_settings.cache_clear()
    try:
        first = backup.apply(task_id="backup-run-1")
        backup.apply(task_id="backup-run-1")  # the same run delivered again by the broker
    finally:
        os.environ.pop("FLEET_BACKUP__PG_BIN_DIR")
        os.environ.pop("FLEET_BACKUP__DIRECTORY")
        get_settings.cache_clear()
    assert first.failed()
    (text,) = telegram.texts()
    assert text.startswith("🔴 nightly backup failed\nBackupError: backup ")
    assert "pg_dump failed (exit 1): pg_dump: error: connection to server" in text
