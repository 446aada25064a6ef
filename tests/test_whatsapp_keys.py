"""WhatsApp key maintenance on a realistic key store: prune by policy in batches, watch session health."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sentry_sdk

from ops.standins.telegram import TelegramStandIn
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import KeysSettings, Settings
from shared.whatsapp.cleanup import CleanupReport, cleanup_keys, next_batch_size
from shared.whatsapp.health import check_sessions

NOW = datetime.now(UTC)
A, B = "company_962302", "company_1"

# (company, key type, how many, days since update, expires in days (None: no expiry), deletable)
STORE: list[tuple[str, str, int, float, float | None, bool]] = [
    (A, "pre-key", 850, 60, None, False),  # old but needed: never deleted
    (A, "app-state-sync-key", 6, 90, None, False),
    (A, "app-state-sync-version", 5, 90, None, False),
    (A, "session", 40, 1, None, False),
    (A, "session", 12, 45, None, True),
    (A, "sender-key-memory", 20, 10, -1, True),
    (A, "sender-key-memory", 5, 1, 5, False),
    (A, "device-list", 10, 10, -2, True),
    (A, "tctoken", 10, 10, -1, True),
    (A, "lid-mapping", 5, 40, None, True),
    (A, "lid-mapping", 5, 2, None, False),
    (A, "identity-key", 5, 90, None, True),
    (A, "identity-key", 5, 10, None, False),
    (A, "mystery-type", 3, 400, -300, False),  # not in the policy: kept and reported
    (B, "pre-key", 20, 120, None, False),
    (B, "session", 30, 100, None, True),
    (B, "sender-key", 3, 100, None, True),
    (B, "app-state-sync-key", 2, 100, -50, False),  # expired, still never deleted
]


def seed_store(conn: psycopg.Connection) -> Counter[tuple[str, str]]:
    """Insert the store above (plus a tctoken __index that expired long ago); returns the deletable counts."""
    deletable: Counter[tuple[str, str]] = Counter()
    conn.execute("INSERT INTO whatsapp_auth (company_id, creds) VALUES (%s, '{}'), (%s, '{}')", (A, B))
    with conn.cursor() as cur:
        for group, (company, key_type, count, age, expires, delete) in enumerate(STORE):
            updated = NOW - timedelta(days=age)
            expiry = None if expires is None else NOW + timedelta(days=expires)
            cur.executemany(
                "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, created_at, updated_at, expires_at)"
                " VALUES (%s, %s, %s, '{\"k\": 1}', %s, %s, %s)",
                [(company, key_type, f"{group}.{n}", updated, updated, expiry) for n in range(count)],
            )
            if delete:
                deletable[(company, key_type)] += count
        cur.execute(
            "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, updated_at, expires_at)"
            " VALUES (%s, 'tctoken', '__index', '{}', %s, %s)",
            (A, NOW - timedelta(days=30), NOW - timedelta(days=20)),
        )
    return deletable


@pytest.fixture
def store(db: psycopg.Connection) -> Iterator[Counter[tuple[str, str]]]:
    open_process_pool(role="test", max_size=2, wait=True)
    yield seed_store(db)
    close_process_pool()


def remaining(db: psycopg.Connection) -> Counter[tuple[str, str]]:
    rows = db.execute("SELECT company_id, key_type, count(*) FROM whatsapp_keys GROUP BY 1, 2").fetchall()
    return Counter({(company, key_type): n for company, key_type, n in rows})


def test_cleanup_deletes_exactly_the_deletable_keys_in_batches(
    db: psycopg.Connection, store: Counter[tuple[str, str]]
) -> None:
    before = remaining(db)
    report = cleanup_keys(KeysSettings(batch_size=7, max_batch_size=7))
    assert report.status == "succeeded"
    deleted = Counter({(c, t): n for c, counts in report.by_company.items() for t, n in counts.items()})
    assert deleted == store
    assert remaining(db) == before - store
    # No batch holds more than 7 keys; one batch may hold several types (one pass over the table takes them all).
    assert report.largest_batch == 7
    assert report.batches >= -(-sum(store.values()) // 7)
    # Never a protected key: pre-keys, app-state keys and the tctoken index all survive.
    kept = remaining(db)
    assert kept[(A, "pre-key")] == 850
    assert kept[(B, "app-state-sync-key")] == 2
    assert db.execute("SELECT count(*) FROM whatsapp_keys WHERE key_id = '__index'").fetchone()[0] == 1
    assert report.unknown_types == {"mystery-type": 3}
    assert db.execute("SELECT count(*) FROM whatsapp_auth").fetchone()[0] == 2
    journal = db.execute("SELECT status, deleted, unknown_types FROM key_cleanup_runs").fetchone()
    assert journal[0] == "succeeded"
    assert sum(journal[1].values()) == sum(store.values())
    assert journal[2] == {"mystery-type": 3}


def test_a_key_the_gateway_is_writing_is_skipped_and_the_cleanup_still_deletes_the_rest(
    db: psycopg.Connection, store: Counter[tuple[str, str]], settings: Settings
) -> None:
    """A key held by the gateway is skipped, never waited for, and never ends the run early: the run stops only
    when a batch deletes nothing (the benchmark's concurrent writes once ended it after 65,000 of 500,000 keys,
    when a batch came back one short)."""
    before = remaining(db)
    with psycopg.connect(settings.database_conninfo) as gateway:
        held = gateway.execute(
            "SELECT company_id, key_type, key_id FROM whatsapp_keys WHERE company_id = %s AND key_type = 'session'"
            " ORDER BY key_id LIMIT 1 FOR UPDATE",
            (B,),
        ).fetchone()
        report = cleanup_keys(KeysSettings(batch_size=7, max_batch_size=7))
        gateway.rollback()
    assert report.status == "succeeded"
    assert sum(report.deleted.values()) == sum(store.values()) - 1, "every deletable key but the one held"
    assert remaining(db) == before - store + Counter({(B, "session"): 1})
    assert db.execute(
        "SELECT count(*) FROM whatsapp_keys WHERE company_id = %s AND key_type = %s AND key_id = %s", held
    ).fetchone() == (1,)


class _Run(threading.Thread):
    """A cleanup in a thread of its own, so the test can play the gateway while it runs."""

    def __init__(self, settings: KeysSettings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.report: CleanupReport | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.report = cleanup_keys(self.settings)
        except BaseException as exc:
            self.error = exc
        self.seconds = time.monotonic() - started


def _wait_until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _waiting_for_a_lock(db: psycopg.Connection) -> bool:
    return db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND pid <> pg_backend_pid()"
    ).fetchone() == (1,)


def test_a_key_the_gateway_writes_while_a_batch_deletes_survives_and_the_counts_stay_exact(
    db: psycopg.Connection, store: Counter[tuple[str, str]], settings: Settings
) -> None:
    """A batch counts its keys and deletes them with the policy re-checked at delete time. A key the gateway
    writes after the batch found it idle (the batch waits for the write) is no longer idle, so it is not deleted;
    the batch then deleted one key fewer than it counted, and is redone, so the journal's counts stay exact."""
    # Room on the key's page, so its new version stays on the page, inside the batch's range: what keeps it is
    # then the policy's re-check, not its having moved out of the range.
    (page,) = db.execute(
        "SELECT (ctid::text::point)[0]::int FROM whatsapp_keys WHERE company_id = %s AND key_type = 'session'"
        " ORDER BY ctid LIMIT 1",
        (B,),
    ).fetchone()
    db.execute(
        "DELETE FROM whatsapp_keys WHERE company_id = %s AND key_type = 'pre-key' AND (ctid::text::point)[0] = %s",
        (B, page),
    )
    db.execute("VACUUM whatsapp_keys")
    before = remaining(db)
    with psycopg.connect(settings.database_conninfo) as gateway:
        key = gateway.execute(
            "UPDATE whatsapp_keys SET value = '{\"k\": 2}', updated_at = now() WHERE (company_id, key_type, key_id) ="
            " (SELECT company_id, key_type, key_id FROM whatsapp_keys WHERE company_id = %s AND key_type = 'session'"
            " ORDER BY ctid LIMIT 1) RETURNING company_id, key_type, key_id, (ctid::text::point)[0]::int, ctid::text",
            (B,),
        ).fetchone()
        assert key[3] == page, "the key's new version stayed on its page"
        (inside,) = gateway.execute(
            "SELECT %s::tid < max(ctid) FROM whatsapp_keys WHERE company_id = %s AND key_type = 'sender-key'",
            (key[4], B),
        ).fetchone()
        assert inside, "and before the last key the batch deletes: inside the batch's range"
        run = _Run(KeysSettings(batch_target_ms=20_000))  # a lock timeout of 5 s: the batch waits for the write
        run.start()
        _wait_until(lambda: _waiting_for_a_lock(db), "the batch waits for the key the gateway is writing")
        gateway.commit()
        run.join(10)
    assert not run.is_alive()
    assert run.error is None
    assert run.report is not None
    assert run.report.status == "succeeded"
    assert db.execute(
        "SELECT updated_at > now() - interval '1 hour' FROM whatsapp_keys"
        " WHERE company_id = %s AND key_type = %s AND key_id = %s",
        key[:3],
    ).fetchone() == (True,), "the key the gateway wrote is kept"
    kept = Counter({(B, "session"): 1})
    assert remaining(db) == before - store + kept
    deleted = Counter({(c, t): n for c, counts in run.report.by_company.items() for t, n in counts.items()})
    assert deleted == store - kept, "the counts are of what was deleted, not of what was found"
    assert run.report.redone >= 1, "the batch that lost the key was redone"
    journal = db.execute("SELECT by_company FROM key_cleanup_runs").fetchone()[0]
    assert journal[B]["session"] == store[(B, "session")] - 1


def test_a_batch_that_meets_a_held_key_waits_no_longer_than_its_lock_timeout_and_the_run_finishes(
    db: psycopg.Connection, store: Counter[tuple[str, str]], settings: Settings
) -> None:
    """The gateway writes a key and keeps its transaction open for the whole run: the batch that meets it gives
    up after its lock timeout (a quarter of the batch target), is redone skipping that key, and the run ends
    with every other deletable key gone instead of waiting for the gateway."""
    before = remaining(db)
    with psycopg.connect(settings.database_conninfo) as gateway:
        held = gateway.execute(
            "UPDATE whatsapp_keys SET value = '{\"k\": 2}' WHERE (company_id, key_type, key_id) ="
            " (SELECT company_id, key_type, key_id FROM whatsapp_keys WHERE company_id = %s AND key_type = 'session'"
            " ORDER BY key_id LIMIT 1) RETURNING company_id, key_type, key_id",
            (B,),
        ).fetchone()
        run = _Run(KeysSettings(batch_target_ms=200))  # a lock timeout of 50 ms
        run.start()
        run.join(10)
        finished = not run.is_alive()
        gateway.rollback()
        run.join(10)
    assert finished, "the run waited for the gateway's transaction"
    assert run.error is None
    assert run.report is not None
    assert run.report.status == "succeeded"
    assert run.report.redone >= 1, "the batch that met the held key was redone"
    assert run.seconds < 3
    assert remaining(db) == before - store + Counter({(B, "session"): 1})
    assert db.execute(
        "SELECT count(*) FROM whatsapp_keys WHERE company_id = %s AND key_type = %s AND key_id = %s", held
    ).fetchone() == (1,)
    assert sum(run.report.deleted.values()) == sum(store.values()) - 1


def test_a_dry_run_reports_by_company_and_type_and_changes_nothing(
    db: psycopg.Connection, store: Counter[tuple[str, str]]
) -> None:
    before = remaining(db)
    report = cleanup_keys(KeysSettings(), dry_run=True)
    assert remaining(db) == before
    assert Counter({(c, t): n for c, counts in report.by_company.items() for t, n in counts.items()}) == store
    assert f"would delete {sum(store.values())} keys" in report.render()
    assert f"  {B}: sender-key 3, session 30" in report.render()


def test_an_interrupted_run_loses_nothing_and_the_next_run_completes(
    db: psycopg.Connection, store: Counter[tuple[str, str]]
) -> None:
    before = remaining(db)
    first = cleanup_keys(KeysSettings(batch_size=5, max_batch_size=5), max_batches=3)
    assert first.status == "partial"
    assert sum(first.deleted.values()) == 15
    assert sum((before - remaining(db)).values()) == 15, "what the partial run deleted is all it reported"
    second = cleanup_keys(KeysSettings(batch_size=5))
    assert second.status == "succeeded"
    assert remaining(db) == before - store
    statuses = [row[0] for row in db.execute("SELECT status FROM key_cleanup_runs ORDER BY id").fetchall()]
    assert statuses == ["partial", "succeeded"]


def test_batches_grow_while_they_are_quick_and_shrink_when_slow(
    db: psycopg.Connection, store: Counter[tuple[str, str]]
) -> None:
    settings = KeysSettings(batch_size=5, batch_target_ms=1000, max_batch_size=40)
    assert next_batch_size(5, 0.1, settings) == 10, "well under the target: doubles"
    assert next_batch_size(40, 0.1, settings) == 40, "never past the largest"
    assert next_batch_size(40, 0.7, settings) == 40, "near the target: kept"
    assert next_batch_size(40, 1.5, settings) == 20, "over the target: halves"
    assert next_batch_size(1, 9.0, settings) == 1
    before = remaining(db)
    report = cleanup_keys(settings)
    assert remaining(db) == before - store
    assert report.largest_batch > 5, "quick batches did not grow"
    fixed = sum(-(-n // 5) for n in Counter(t for (_, t) in store.elements()).values())
    assert report.batches < fixed, "growing batches took fewer statements than fixed ones"


def _age_all(db: psycopg.Connection, company: str, hours: float) -> None:
    db.execute(
        "UPDATE whatsapp_keys SET updated_at = now() - make_interval(hours => %s) WHERE company_id = %s",
        (hours, company),
    )


def test_health_moves_healthy_warning_unhealthy_with_one_alert_per_change(
    db: psycopg.Connection,
    store: Counter[tuple[str, str]],
    recorded_events: list[dict[str, Any]],
    telegram: TelegramStandIn,
) -> None:
    db.execute("DELETE FROM whatsapp_keys WHERE company_id = %s", (B,))
    db.execute("DELETE FROM whatsapp_auth WHERE company_id = %s", (B,))
    db.execute("UPDATE whatsapp_keys SET expires_at = NULL WHERE company_id = %s", (A,))
    settings = KeysSettings()
    timeline = []
    for hours in (1, 1, 30, 30, 50, 50, 0):
        _age_all(db, A, hours)
        [health] = check_sessions(settings)
        timeline.append(health.status)
    sentry_sdk.flush()
    assert timeline == ["healthy", "healthy", "warning", "warning", "unhealthy", "unhealthy", "healthy"]
    messages = [
        (event["level"], event["message"] if "message" in event else event["logentry"]["message"])
        for event in recorded_events
    ]
    assert messages == [
        ("warning", "WhatsApp session is warning"),
        ("error", "WhatsApp session is unhealthy"),
        ("info", "WhatsApp session recovered to healthy"),
    ]
    assert all(event["tags"]["company"] == A for event in recorded_events)
    stored = db.execute("SELECT count(*) FROM health_checks WHERE check_name = 'whatsapp_session'").fetchone()[0]
    assert stored == 7
    # The operators' chat hears of the session turning critical and of its recovery, not of the warning.
    critical, recovered = telegram.texts()
    assert critical.startswith(f"🔴 WhatsApp session of company {A}: unhealthy (was warning)\n• no key updated")
    assert recovered == f"🟢 WhatsApp session of company {A}: healthy (was unhealthy)"


def test_health_flags_missing_creds_expired_keys_and_bloat(
    db: psycopg.Connection, store: Counter[tuple[str, str]]
) -> None:
    db.execute("DELETE FROM whatsapp_auth WHERE company_id = %s", (B,))
    db.execute("UPDATE whatsapp_keys SET updated_at = now()")
    results = {h.company_id: h for h in check_sessions(KeysSettings(bloat_threshold=900))}
    assert results[B].status == "unhealthy"
    assert any("no creds row" in problem for problem in results[B].problems)
    assert results[A].status == "warning"
    assert any("bloat" in problem for problem in results[A].problems)
    db.execute("UPDATE whatsapp_keys SET expires_at = now() - interval '1 day' WHERE company_id = %s", (A,))
    results = {h.company_id: h for h in check_sessions(KeysSettings(bloat_threshold=900))}
    assert results[A].status == "unhealthy"
    assert any("expired" in problem for problem in results[A].problems)


def test_fleet_keys_commands(
    db: psycopg.Connection, store: Counter[tuple[str, str]], fleet_env: dict[str, str]
) -> None:
    import subprocess
    import sys

    from tests.support.processes import ROOT

    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers.cli", "keys", *args],
            cwd=ROOT,
            env=fleet_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    before = remaining(db)
    dry = fleet("cleanup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"  {B}: sender-key 3, session 30" in dry.stdout
    assert remaining(db) == before
    health = fleet("health")
    assert health.returncode == 1, "company_1's sessions have not been updated for 100 days"
    assert f"{B:<24} unhealthy" in health.stdout
    done = fleet("cleanup")
    assert done.returncode == 0
    assert f"deleted {sum(store.values())} keys" in done.stdout
