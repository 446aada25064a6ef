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
from shared.inbound.lanes import RECEIVE_TASK as RECEIVE
from shared.inbound.lanes import lane_of
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


@pytest.mark.slow
def test_a_quiet_salon_is_answered_within_a_second_while_another_floods(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    open_process_pool(role="test", max_size=2, wait=True)
    seed_salon()
    seed_salon(QUIET)
    close_process_pool()
    client = redis.Redis.from_url(fleet_env["REDIS_URL"])
    with gateway_stand_in() as gateway:
        env = {**fleet_env, "FLEET_GATEWAY__SEND_URL": gateway.url, "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0"}
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
            wait_until(lambda: db.execute("SELECT bool_and(status = 'sent') FROM outbox").fetchone()[0], 60, "sent")
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
        (json.dumps(envelope("workers.inbound.drain_chat", args=[962302, "+79110000001"], queue="inbound")), "962302"),
        (json.dumps(envelope("workers.inbound.deliver_reply", args=[123456], queue="inbound")), "fleet"),
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
    """The router reads each message's salon; nothing a producer sends can stop it (the workers judge it)."""
    assert lane_of(raw) == lane
