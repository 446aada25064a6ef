"""The fleet through Debian's PgBouncer in transaction mode, started by the test: two "hosts" (two inbound
workers with their own node names) sharing one Redis and one database answer every message once, in order
per chat, while PostgreSQL sees no more server connections than PgBouncer's pool."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from ops.standins.gateway import GatewayStandIn, gateway_stand_in
from shared.core.pool import close_process_pool, open_process_pool
from tests.support.chats import assert_each_chat_answered_once_in_order
from tests.support.pgbouncer import PgBouncer, pgbouncer_in_front_of
from tests.support.processes import ROOT, running_worker, wait_until
from tests.support.seed import COMPANY, chat_message, seed_salon
from workers.producer import enqueue_message

pytestmark = pytest.mark.slow
POOL_SIZE = 2
CHATS = [f"+7911000{n:04d}" for n in range(6)]


@pytest.fixture
def bouncer(db: psycopg.Connection, fleet_env: dict[str, str]) -> Iterator[PgBouncer]:
    open_process_pool(role="test", max_size=2, wait=True)
    seed_salon()
    close_process_pool()
    with pgbouncer_in_front_of(fleet_env["DATABASE_URL"], pool_size=POOL_SIZE) as running:
        yield running


def through(bouncer: PgBouncer, fleet_env: dict[str, str], gateway: GatewayStandIn) -> dict[str, str]:
    return {
        **fleet_env,
        "DATABASE_URL": bouncer.transaction_url,
        "FLEET_POOL__POOLER": "pgbouncer",
        "FLEET_POOL__SESSION_URL": bouncer.session_url,
        "FLEET_POOL__POOLER_SERVER_CONNECTIONS": str(POOL_SIZE),
        "FLEET_POOL__MIN_SIZE": "2",  # each child keeps two connections to PgBouncer: 8 clients, 2 servers
        "FLEET_GATEWAY__SEND_URL": gateway.url,
        # Order within a chat is promised over the burst window (docs/inbound.md): with none, a child waiting for
        # one of PgBouncer's two server connections past the chat's next message answered them out of order on
        # a busy CI machine. Half a second covers such a wait; every message still goes through the pooler.
        "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0.5",
    }


class PoolWatch(threading.Thread):
    """Samples PgBouncer's pools while the fleet works: the most clients and server connections seen."""

    def __init__(self, bouncer: PgBouncer) -> None:
        super().__init__(daemon=True)
        self.bouncer = bouncer
        self.peak: dict[str, dict[str, int]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for pool in self.bouncer.show("POOLS"):
                clients = pool["cl_active"] + pool["cl_waiting"]
                servers = sum(pool[k] for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
                seen = self.peak.setdefault(pool["database"], {"clients": 0, "servers": 0})
                seen["clients"], seen["servers"] = max(seen["clients"], clients), max(seen["servers"], servers)
            time.sleep(0.05)


def test_two_hosts_through_pgbouncer_answer_every_message_once_in_order(
    bouncer: PgBouncer, fleet_env: dict[str, str], db: psycopg.Connection, tmp_path: Path
) -> None:
    watch = PoolWatch(bouncer)
    with gateway_stand_in() as gateway, ExitStack() as hosts:
        env = through(bouncer, fleet_env, gateway)
        for host in ("host-a", "host-b"):
            hosts.enter_context(running_worker("inbound", env, tmp_path, concurrency=2, node=f"inbound@{host}"))
        watch.start()
        for n in range(10):
            for chat in CHATS:
                enqueue_message(chat_message(COMPANY, chat, n, f"вопрос {n}"))
        answered = "SELECT count(*) FROM messages WHERE status IN ('answered', 'merged')"
        wait_until(lambda: db.execute(answered).fetchone()[0] == 60, 120, "60 messages answered")
        wait_until(lambda: db.execute("SELECT bool_and(status = 'done') FROM outbox").fetchone()[0], 60, "sent")
        watch.done.set()
        watch.join()
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0, "no statement failed the pooler"
    assert_each_chat_answered_once_in_order(db, gateway, CHATS)
    transaction_pool, session_pool = watch.peak[bouncer.dbname], watch.peak[f"{bouncer.dbname}_session"]
    print(f"\nthrough PgBouncer, peak: {transaction_pool} (transaction mode), {session_pool} (session mode)")
    assert transaction_pool["servers"] <= POOL_SIZE, "PostgreSQL saw no more than PgBouncer's pool"
    assert transaction_pool["clients"] > POOL_SIZE, "more fleet connections than server connections: pooled"
    assert session_pool["clients"] <= 4, "one session connection per inbound child at most"


def test_fleet_check_through_pgbouncer_reports_the_pooler_and_its_budget(
    bouncer: PgBouncer, fleet_env: dict[str, str]
) -> None:
    with gateway_stand_in() as gateway:
        env = through(bouncer, fleet_env, gateway)
    checked = subprocess.run(
        [sys.executable, "-m", "workers.cli", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "pgbouncer: reachable at DATABASE_URL; statement_timeout there: 0" in checked.stdout
    assert "ALTER ROLE postgres SET statement_timeout = '30000ms'" in checked.stdout
    assert "PgBouncer server pool" in checked.stdout
    assert "session: inbound answering locks" in checked.stdout
