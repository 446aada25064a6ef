"""Fair turns across salons with real workers: while one salon floods the fleet, another salon's client is
answered within a second, and every flood message is answered once, in order per chat."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest
import redis

from ops.standins.gateway import gateway_stand_in
from shared.core.pool import close_process_pool, open_process_pool
from shared.health.checks import queue_depths
from shared.inbound import lanes as lanes_module
from shared.inbound.lanes import DRAIN_TASK, INTAKE, READY, RING, Lanes, lane_of
from shared.inbound.lanes import RECEIVE_TASK as RECEIVE
from tests.support.chats import assert_each_chat_answered_once_in_order
from tests.support.processes import running_worker, wait_until
from tests.support.raw_broker import envelope
from tests.support.seed import COMPANY, chat_message, seed_salon
from workers.producer import enqueue_many, enqueue_message

QUIET = 962303
FLOOD = 1500
FLOOD_CHATS = [f"+7911200{n:04d}" for n in range(150)]
QUIET_CHAT = "+79113000001"
BOUND_SECONDS = 1.0
SERVED = frozenset({"5", "77", "962302"})
MAX_BYTES = 1_048_576


@pytest.mark.slow
def test_a_quiet_salon_is_answered_within_a_second_while_another_floods(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    open_process_pool(role="test", max_size=2, wait=True)
    seed_salon()
    seed_salon(QUIET)
    close_process_pool()
    client = redis.Redis.from_url(fleet_env["REDIS_URL"])
    with gateway_stand_in(companies=(COMPANY, QUIET)) as gateway:
        env = {
            **fleet_env,
            "FLEET_GATEWAY__SEND_URL": gateway.url,
            "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0",
            "FLEET_YCLIENTS__COMPANY_IDS": f"[{COMPANY}, {QUIET}]",  # lanes are for served salons only
        }
        with running_worker("inbound", env, tmp_path, concurrency=2):
            flood = [chat_message(COMPANY, FLOOD_CHATS[n % len(FLOOD_CHATS)], n) for n in range(FLOOD)]
            ids, rejected = enqueue_many(flood)
            assert len(ids) == FLOOD
            assert not rejected
            asked_at = time.time()
            enqueue_message(chat_message(QUIET, QUIET_CHAT, 0))
            wait_until(lambda: gateway.to(QUIET_CHAT), 30, "the quiet salon's reply")
            waited = gateway.to(QUIET_CHAT)[0].at - asked_at
            backlog = queue_depths(client)["inbound"]["backlog_by_salon"]
            answered_before = len(
                [d for d in gateway.deliveries if d.phone in FLOOD_CHATS and d.at < asked_at + waited]
            )
            wait_until(lambda: gateway.count() == FLOOD + 1, 240, "every flood message answered")
            wait_until(lambda: db.execute("SELECT bool_and(status = 'done') FROM outbox").fetchone()[0], 60, "sent")
    print(f"\nquiet salon answered in {waited * 1000:.0f} ms, behind {answered_before} of {FLOOD} flood messages")
    assert waited < BOUND_SECONDS, f"the quiet salon waited {waited:.2f} s behind the flood"
    assert answered_before < FLOOD / 2, "the quiet message did not wait for the flood to drain"
    assert int(backlog.get(str(COMPANY), 0)) > 0, "health shows the flooding salon's backlog while it lasts"
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    assert_each_chat_answered_once_in_order(db, gateway, [*FLOOD_CHATS, QUIET_CHAT])
    assert queue_depths(client)["inbound"]["backlog_by_salon"] == {}


@pytest.mark.parametrize(
    ("raw", "lane"),
    [
        (json.dumps(envelope(RECEIVE, kwargs={"payload": {"company_id": 5, "text": "x"}}, queue="inbound")), "5"),
        (json.dumps(envelope(RECEIVE, args=[{"company_id": "77"}], queue="inbound")), "77"),
        (json.dumps(envelope(RECEIVE, args=[{"company_id": " 077"}], queue="inbound")), "77"),
        (json.dumps(envelope("workers.inbound.drain_chat", args=[962302, "+79110000001"], queue="inbound")), "962302"),
        (json.dumps(envelope("workers.inbound.deliver_reply", args=[123456], queue="inbound")), "fleet"),
        (json.dumps(envelope(RECEIVE, kwargs={"payload": {"company_id": 6, "text": "x"}}, queue="inbound")), "fleet"),
        (json.dumps(envelope("workers.inbound.drain_chat", args=[962303, "+79110000001"], queue="inbound")), "fleet"),
        (json.dumps(envelope(RECEIVE, kwargs={"payload": {"company_id": True}}, queue="inbound")), "fleet"),
        (json.dumps(envelope(RECEIVE, kwargs={"payload": {"company_id": "1; DROP"}}, queue="inbound")), "fleet"),
        (json.dumps(envelope(RECEIVE, kwargs={"payload": "not a mapping"}, queue="inbound")), "fleet"),
        (json.dumps(envelope(RECEIVE, body="%%% not base64 %%%", queue="inbound")), "fleet"),
        (b"\xff\xfe not json", "fleet"),
        (b"[" * 100_000, "fleet"),  # nested past Python's recursion limit
        (b"null", "fleet"),
    ],
)
def test_every_queued_message_gets_a_lane_whatever_it_holds(raw: bytes | str, lane: str) -> None:
    """The router reads each message's salon, given a lane only when served; nothing a producer sends can stop
    it (the workers judge it)."""
    assert lane_of(raw, SERVED) == lane


def _queued(company: int, n: int) -> str:
    return json.dumps(envelope(DRAIN_TASK, args=[company, f"+7911{n:07d}"], queue="inbound", task_id=f"{company}-{n}"))


def _ready_order(client: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in reversed(client.lrange(READY, 0, -1))]


def test_the_lanes_deal_one_message_of_each_salon_in_turn_keeping_each_salons_order(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    for n in range(3):
        client.lpush(INTAKE, _queued(1, n))
    client.lpush(INTAKE, _queued(2, 0), _queued(3, 0))
    steps = Lanes(client, served=[1, 2, 3], max_bytes=MAX_BYTES)
    assert steps.route("fleet:inflight:inbound:router-test", 500) == 5
    assert client.llen("fleet:inflight:inbound:router-test") == 0
    assert steps.dispatch(4) == (4, 1)
    assert _ready_order(client) == ["1-0", "2-0", "3-0", "1-1"]
    client.delete(READY)
    assert steps.dispatch(4) == (1, 0)
    assert _ready_order(client) == ["1-2"]
    assert client.llen(RING) == 0


def test_a_lane_another_router_added_meanwhile_takes_its_turn(clean_redis: str) -> None:
    """The dispatch step is given the lanes it may reach; one it was not given ends the step, keeps its turn,
    and is named in the step run at once after it."""
    client = redis.Redis.from_url(clean_redis)
    routing, dealing = (Lanes(client, served=[1, 2], max_bytes=MAX_BYTES) for _ in range(2))
    client.lpush(INTAKE, _queued(1, 0), _queued(1, 1))
    routing.route("fleet:inflight:inbound:router-a", 500)
    assert dealing.dispatch(1) == (1, 1)  # the dealing router now knows lane 1 only
    client.delete(READY)
    client.lpush(INTAKE, _queued(2, 0))
    routing.route("fleet:inflight:inbound:router-a", 500)
    assert dealing.dispatch(4) == (2, 0)
    assert _ready_order(client) == ["1-1", "2-0"]


def test_no_lua_step_builds_a_key_name() -> None:
    """Every key a script touches comes from KEYS (Redis Cluster routes by them); none is concatenated in Lua."""
    scripts = [lanes_module.TAKE, lanes_module.PLACE, lanes_module.DISPATCH]
    assert all(".." not in script for script in scripts)
