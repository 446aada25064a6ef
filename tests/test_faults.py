"""Faults under load, with real processes: the fleet keeps every message, answers it once, and recovers alone.

Run separately with `./ops/run-tests -m faults`. The scenario runs a steady producer over many chats while
a worker child and then a worker's main process are SIGKILLed, Redis is restarted (its own instance, with
an append-only file, as a production broker should run), every fleet connection is cut with
pg_terminate_backend, PostgreSQL is restarted (its own server too), and beat is stopped and started again.
Only the SIGKILL of a main process may need the supervisor: the worker rides out the rest by itself.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery

from ops.harness.connections import ConnectionPeak
from ops.standins.gateway import gateway_stand_in
from shared.core.budget import connection_budget
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import load_settings
from shared.inbound.gateway import gateway_id
from shared.inbound.payload import TASK_NAME
from tests.support.postgres_server import OwnPostgres
from tests.support.processes import FleetProcess, Supervised, wait_until
from tests.support.redis_server import OwnRedis
from tests.support.seed import COMPANY, seed_salon
from tests.support.sentry_server import sentry_stand_in
from workers.config import build_celery_config

pytestmark = [pytest.mark.slow, pytest.mark.faults]
CHATS = 30
RATE = 12  # messages a second


class Producer(threading.Thread):
    """A gateway that sends a steady stream and, like a real one, retries an enqueue that failed."""

    def __init__(self, app: Celery) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.sent: list[dict] = []
        self.failed_attempts = 0
        self.stop = threading.Event()

    def run(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            payload = {
                "company_id": COMPANY,
                "chat_id": f"+7911{n % CHATS:07d}",
                "gateway_message_id": f"fault-{n}",
                "text": ["1", "5", "привет", "2"][n % 4],
                "sent_at": datetime.now(UTC).isoformat(),
            }
            while not self.stop.is_set():
                try:
                    self.app.send_task(TASK_NAME, kwargs={"payload": payload}, queue="inbound")
                    self.sent.append(payload)
                    break
                except Exception:  # the broker is down: try again shortly
                    self.failed_attempts += 1
                    time.sleep(0.2)
            time.sleep(1 / RATE)


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


class Database:
    """The test's own PostgreSQL, queried on a fresh connection each time (it is restarted under us)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def execute(self, query: str, params: tuple = ()) -> psycopg.Cursor:
        conn = psycopg.connect(self.conninfo, autocommit=True)
        cursor = conn.execute(query, params)
        rows = cursor.fetchall()
        conn.close()
        return _Rows(rows)  # type: ignore[return-value]


class _Rows:
    def __init__(self, rows: list) -> None:
        self.rows = rows

    def fetchone(self) -> tuple:
        return self.rows[0]

    def fetchall(self) -> list:
        return self.rows


def test_the_fleet_survives_faults_under_load(tmp_path: Path) -> None:
    server = OwnPostgres()
    server.init()
    server.start()
    conninfo = server.create_database("fleet_faults")
    upgrade(conninfo)
    db = Database(conninfo)
    broker = OwnRedis(tmp_path / "redis")
    broker.start()
    with gateway_stand_in() as gateway, sentry_stand_in() as (dsn, sentry):
        env = {
            **os.environ,
            "DATABASE_URL": conninfo,
            "REDIS_URL": broker.url,
            "SENTRY_DSN": dsn,
            "FLEET_GATEWAY__SEND_URL": gateway.url,
            "FLEET_STATE_DIR": str(tmp_path / "state"),
            "PYTHONUNBUFFERED": "1",
            "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0.2",
            "FLEET_INBOUND__SWEEP_GRACE_SECONDS": "5",
            "FLEET_WORKERS__INBOUND__SOFT_TIME_LIMIT": "10",
            "FLEET_WORKERS__INBOUND__TIME_LIMIT": "15",
            "FLEET_WORKERS__INBOUND__VISIBILITY_TIMEOUT": "20",
            "FLEET_GATEWAY__RETRY_BASE_SECONDS": "0.5",
            # A delivery cut off by the Redis restart keeps its claim until the lease ends; compressed like the
            # time limits above, so the sweep re-sends it inside the test's wait.
            "FLEET_GATEWAY__TIMEOUT_SECONDS": "4",
            "FLEET_GATEWAY__LEASE_SECONDS": "8",
        }
        open_process_pool(role="test", settings=load_settings(database_url=conninfo), max_size=2, wait=True)
        seed_salon()
        close_process_pool()
        producer_settings = load_settings(redis_url=broker.url)
        producer_app = Celery("producer")
        producer_app.conf.update(build_celery_config(producer_settings))
        # A gateway reads no results: without a backend, no pending result reaches for the test's Redis after it
        # is gone (a warning at garbage collection, in whichever later test it happens).
        producer_app.conf.result_backend = None
        logs = tmp_path / "logs"
        logs.mkdir()
        inbound = Supervised(
            lambda generation: FleetProcess(
                ["worker", "inbound", "--concurrency", "2", "--name", f"inbound-{generation}@faults"],
                env,
                logs / f"inbound-{generation}.log",
            )
        )
        keys = FleetProcess(["worker", "keys", "--name", "keys@faults"], env, logs / "keys.log")
        beat = FleetProcess(["beat"], env, logs / "beat-0.log")
        watch = ConnectionPeak(conninfo, own_role="test")
        producer = Producer(producer_app)
        try:
            wait_until(lambda: "ready." in inbound.current.output(), 30, "the inbound worker")
            watch.start()
            producer.start()
            time.sleep(6)

            os.kill(children_of(inbound.current.pid)[0], signal.SIGKILL)  # 1. a worker child
            time.sleep(6)
            killed_main = inbound.current.pid
            os.kill(killed_main, signal.SIGKILL)  # 2. a worker's main process
            wait_until(
                lambda: inbound.generation >= 1 and "ready." in inbound.current.output(),
                60,
                "the supervisor to restart the inbound worker",
            )
            time.sleep(6)
            restarts_needed = inbound.restarts  # from here on, the worker must recover by itself
            broker.restart(down_seconds=2)  # 3. Redis
            wait_until(  # the worker saw it (a loaded machine takes longer than any fixed pause)
                lambda: any(
                    mark in path.read_text(errors="replace")
                    for path in logs.glob("inbound-*.log")
                    for mark in ("Connection to broker lost", "Cannot connect to redis")
                ),
                60,
                "the inbound worker to notice the Redis restart",
            )
            time.sleep(4)
            with psycopg.connect(conninfo, autocommit=True) as admin:  # 4. every fleet connection
                cut = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'fleet-%%' AND application_name <> 'fleet-test'"
                ).fetchone()[0]
            assert cut > 0
            time.sleep(6)
            server.restart(down_seconds=3)  # 5. PostgreSQL
            time.sleep(8)
            beat.stop()  # 6. beat, stopped and started again
            time.sleep(3)
            beat = FleetProcess(["beat"], env, logs / "beat-1.log")
            wait_until(
                lambda: "beat: Starting" in (logs / "beat-1.log").read_text(errors="replace"), 60, "beat started again"
            )
            time.sleep(2)
            producer.stop.set()
            producer.join(10)
            sent = len(producer.sent)
            wait_until(
                lambda: (
                    db.execute("SELECT count(*) FROM messages WHERE status IN ('answered', 'merged')").fetchone()[0]
                    == sent
                ),
                360,
                f"all {sent} messages answered",
                interval=0.5,
            )
            wait_until(
                lambda: db.execute("SELECT count(*) FROM outbox WHERE status <> 'done'").fetchone()[0] == 0,
                60,
                "every reply delivered",
                interval=0.5,
            )
        finally:
            producer.stop.set()
            watch.stop.set()
            beat.stop()
            keys_survived = keys.proc.poll() is None
            keys.stop()
            inbound.stop()
            broker.stop()
        time.sleep(1)
        events = sentry.of_type("event")
    try:
        check_outcome(db, producer, gateway, watch, inbound, restarts_needed, keys_survived, logs, events)
    finally:
        server.remove()


def check_outcome(
    db: Database,
    producer: Producer,
    gateway: Any,
    watch: ConnectionPeak,
    inbound: Supervised,
    restarts_needed: int,
    keys_survived: bool,
    logs: Path,
    events: list[dict],
) -> None:

    # No loss, nothing answered twice.
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == len(producer.sent)
    assert db.execute("SELECT count(*) FROM messages WHERE status NOT IN ('answered', 'merged')").fetchone()[0] == 0
    outbox = db.execute("SELECT id, chat_id, idempotency_key, message_ids FROM outbox ORDER BY id").fetchall()
    answered = [message_id for *_, ids in outbox for message_id in ids]
    assert len(answered) == len(set(answered)) == len(producer.sent), "each message in exactly one reply"
    assert {d.id for d in gateway.deliveries} == {gateway_id(COMPANY, key) for _, _, key, _ in outbox}, (
        "every reply reached the client"
    )
    # Per-chat order: replies in send order, except a message the crash held back, answered when it came.
    sent_at = dict(db.execute("SELECT id, sent_at FROM messages").fetchall())
    received_at = dict(db.execute("SELECT id, received_at FROM messages").fetchall())
    answered_at = dict(db.execute("SELECT id, answered_at FROM messages").fetchall())
    per_chat: dict[str, list[int]] = defaultdict(list)
    for _, chat, _, ids in outbox:
        per_chat[chat] += ids
    late = 0
    for ids in per_chat.values():
        for earlier, later in itertools.pairwise(ids):
            if sent_at[earlier] > sent_at[later]:
                # The message sent first (`later` here) may be answered second only if it was not stored yet
                # when its successor was answered (the crash held it back).
                assert received_at[later] > answered_at[earlier], "answered out of order though already stored"
                late += 1
    assert late <= 4, f"{late} messages arrived after their successors were answered"
    replies_per_chat = defaultdict(list)
    for delivery in gateway.deliveries:
        replies_per_chat[delivery.phone].append(delivery.id)
    for _, chat, _, _ in outbox:
        expected = [gateway_id(COMPANY, key) for _, c, key, _ in outbox if c == chat]
        assert replies_per_chat[chat] == expected, "replies reached the gateway in reply order"
    # Within the budget all along.
    assert 0 < watch.peak <= connection_budget(load_settings()).total
    # Recovered without a person, and each fault left a trace. Only the killed main process needed the
    # supervisor: Redis and PostgreSQL restarts and cut connections are ridden out by the worker itself.
    assert restarts_needed >= 1
    assert inbound.restarts == restarts_needed, "a Redis or PostgreSQL restart made the worker exit"
    assert keys_survived, "the keys worker rode out every fault by itself"
    worker_logs = "".join(path.read_text(errors="replace") for path in logs.glob("inbound-*.log"))
    assert "exited with 'signal 9 (SIGKILL)'" in worker_logs
    assert "Connection to broker lost" in worker_logs or "Cannot connect to redis" in worker_logs
    assert "beat: Starting" in (logs / "beat-1.log").read_text(errors="replace")
    messages = " ".join(
        str(event.get("logentry", {}).get("message", ""))
        + str(event.get("message", ""))
        + str(event.get("exception", ""))
        for event in events
    )
    # Celery logs the lost child at ERROR ("Process %r pid:%r exited with %r"); Sentry's logging integration sends it.
    assert "exited with" in messages or "WorkerLostError" in messages, "the killed child reached Sentry"
    print(
        f"\nfaults: {len(producer.sent)} messages sent, all answered once; {late} answered after a later one;"
        f" supervisor restarts {inbound.restarts} (main SIGKILL only); peak {watch.peak} fleet connections"
    )
