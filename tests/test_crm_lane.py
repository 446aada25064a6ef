"""The yclients worker's lane for CRM writes (workers/crm_lane.py): syncs never take its last free child, so a
client's booking reaches the salon's calendar while long syncs run, and the syncs that had to wait still run,
once each. Below it, the leased slots in Redis (shared/core/slots.py): a dead holder's slot comes free after
its lease, and those who wait are served first come first."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from ops.standins.gateway import GatewayStandIn
from ops.standins.yclients import YClientsStandIn
from shared.core.settings import load_settings
from shared.core.slots import LeasedSlots, hold, let_go
from shared.core.topology import TaskName
from tests.support.booking_loop import COMPANY
from tests.support.chat import Chat, booking_of, records
from tests.support.processes import ROOT, running_worker, running_workers, wait_until
from workers.app import app
from workers.yclients import sync_entity_task

# Enough syncs to take every sync slot of a default yclients worker, and one more that has to wait.
SYNC_ENTITIES = ("records", "clients", "services", "staff", "schedules", "company")


# ---- the slots ---------------------------------------------------------------------------------------------
def test_a_slot_held_by_a_killed_process_is_freed_after_its_lease(clean_redis: str) -> None:
    """The holder renews its 1-second lease from a thread: alive, it keeps the slot past several leases; killed
    (SIGKILL: no `finally` runs), its slot goes to the one waiting within about one lease."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, redis\n"
            "from shared.core.slots import LeasedSlots\n"
            "slots = LeasedSlots(redis.Redis.from_url(sys.argv[1]), 'lease-test')\n"
            "assert slots.acquire('doomed', 1, 1.0, 10.0).granted\n"
            "slots.keep('doomed', 1.0)\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            clean_redis,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        slots = LeasedSlots(redis.Redis.from_url(clean_redis), "lease-test")
        assert slots.acquire("waiting", 1, 1.0, 10.0).granted is False
        time.sleep(3.0)  # three leases: only the renewals keep it
        assert slots.holders() == ["doomed"]
        assert slots.acquire("waiting", 1, 1.0, 10.0).granted is False
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        killed = time.monotonic()
        wait_until(lambda: slots.acquire("waiting", 1, 1.0, 10.0).granted, 5, "the dead holder's slot", interval=0.05)
        assert time.monotonic() - killed < 1.5, "freed within about one lease of the last renewal"
        assert slots.holders() == ["waiting"]
    finally:
        holder.kill()
        holder.wait(5)


def test_those_who_wait_get_the_slots_first_come_and_a_lost_one_loses_its_place(clean_redis: str) -> None:
    slots = LeasedSlots(redis.Redis.from_url(clean_redis), "line-test")
    assert slots.acquire("running", 1, 60, 0.5).granted
    assert slots.acquire("first", 1, 60, 0.5).ahead == 0
    assert slots.acquire("second", 1, 60, 0.5).ahead == 1
    assert slots.acquire("running", 1, 60, 0.5).granted, "a holder asking again (a redelivered task) keeps its slot"
    slots.release("running")
    assert slots.acquire("second", 1, 60, 0.5) == slots.acquire("second", 1, 60, 0.5)
    assert not slots.acquire("second", 1, 60, 0.5).granted, "the slot is kept for the one ahead"
    assert slots.acquire("first", 1, 60, 0.5).granted
    slots.release("first")
    assert slots.acquire("third", 1, 60, 0.5).ahead == 1, "second still waits ahead of a newcomer"
    time.sleep(0.7)  # second stopped asking (its task was lost): its place lapses
    assert slots.acquire("third", 1, 60, 0.5).granted
    assert slots.waiting() == []


def test_a_hold_is_taken_again_by_its_holder_only(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    assert hold(client, "fleet:sync:1:records", "task-a", 30)
    assert hold(client, "fleet:sync:1:records", "task-a", 30), "the deferred task comes back to its own hold"
    assert not hold(client, "fleet:sync:1:records", "task-b", 30), "beat's next fan-out of the same sync"
    let_go(client, "fleet:sync:1:records", "task-b")
    assert not hold(client, "fleet:sync:1:records", "task-b", 30), "only its holder lets it go"
    let_go(client, "fleet:sync:1:records", "task-a")
    assert hold(client, "fleet:sync:1:records", "task-b", 30)


# ---- the lane, with real workers ------------------------------------------------------------------------
class StuckSyncs:
    """The stand-in's override: every request a sync makes hangs until `release` (a stuck or very long sync);
    what carries a booking (create, move, delete, the lookups by staff member and the reads of one record)
    passes at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hanging = 0
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> None:
        parts = path.strip("/").split("/")
        crm = (
            method in ("PUT", "DELETE")
            or (method == "POST" and parts[0] == "records")
            or (method == "GET" and ("staff_id" in query or parts[0] == "record"))
        )
        if not crm:
            with self.lock:
                self.hanging += 1
            self.release.wait(60)  # then answered as usual (None falls through to the stand-in's own answer)


@pytest.mark.slow
def test_a_booking_reaches_the_calendar_while_syncs_fill_every_slot_and_they_all_finish_after(
    loop_env: dict[str, str],
    loop_stand_in: YClientsStandIn,
    gateway: GatewayStandIn,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    concurrency = load_settings().workers.yclients.concurrency  # the default, as `fleet worker yclients` runs
    slots = max(concurrency - 1, 1)
    entities = SYNC_ENTITIES[: slots + 1]
    stuck = StuckSyncs()
    loop_stand_in.override = stuck
    env = {**loop_env, "FLEET_YCLIENTS__TIMEOUT_SECONDS": "90"}  # a hanging answer is waited for, not retried
    started_runs = "SELECT count(*) FROM sync_runs WHERE entity = ANY(%s)"
    try:
        with running_workers(("inbound", "yclients"), env, tmp_path, concurrency=concurrency) as workers:
            for entity in entities:
                app.send_task(TaskName.SYNC_ENTITY, args=(entity, COMPANY))
            wait_until(lambda: stuck.hanging >= slots, 30, "the syncs to fill every slot")

            chat = Chat(gateway, db)
            chat.choose_first_service()
            asked = time.monotonic()
            assert "Записываю вас" in chat.say("1")
            booking = booking_of(db)
            assert booking is not None
            wait_until(lambda: records(loop_stand_in, booking["id"]), 10, "the record in the salon's calendar")
            print(f"\nbooking to calendar while {slots} syncs ran: {time.monotonic() - asked:.2f} s")
            chat.wait_for("Салон подтвердил запись", timeout=10)
            assert db.execute(f"{started_runs} AND status <> 'running'", (list(entities),)).fetchone()[0] == 0, (
                "the syncs were still running"
            )

            # The sync with no slot keeps waiting, deferred more often than its retries allow, and is not lost.
            retries = sync_entity_task.max_retries
            output = workers["yclients"].output
            wait_until(lambda: output().count("waits for a long-task slot") > retries, 60, "the sync deferred")
            stuck.release.set()
            wait_until(
                lambda: (
                    db.execute(f"{started_runs} AND status <> 'running'", (list(entities),)).fetchone()[0]
                    == len(entities)
                ),
                60,
                "every sync to finish",
            )
    finally:
        stuck.release.set()
        loop_stand_in.override = None
    runs = db.execute(
        "SELECT entity, count(*), array_agg(status) FROM sync_runs WHERE entity = ANY(%s) GROUP BY entity",
        (list(entities),),
    ).fetchall()
    assert sorted(entity for entity, _, _ in runs) == sorted(entities), "a sync was lost"
    assert all(count == 1 and statuses == ["succeeded"] for _, count, statuses in runs), runs
    assert len(records(loop_stand_in, booking["id"])) == 1


@pytest.mark.slow
def test_a_yclients_worker_of_one_process_starts_and_warns_that_it_has_no_lane(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    with running_worker("yclients", fleet_env, tmp_path, concurrency=1) as worker:
        wait_until(lambda: "no child is kept free for CRM writes" in worker.output(), 10, "the warning")
