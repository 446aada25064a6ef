"""The inbound worker for real: Redis, PostgreSQL, Celery processes and a local gateway stand-in."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
import redis

from ops.standins.gateway import GatewayStandIn
from shared.core.kombu_contract import ALIVE, INFLIGHT_KEYS, inflight_key
from shared.inbound.gateway import gateway_id
from shared.inbound.payload import TASK_NAME
from tests.support.chats import assert_each_chat_answered_once_in_order
from tests.support.payloads import inbound_payload
from tests.support.processes import INBOUND_LISTS, running_worker, wait_for_idle, wait_until
from tests.support.raw_broker import envelope
from tests.support.seed import COMPANY
from workers.app import app
from workers.producer import enqueue_message

pytestmark = pytest.mark.slow


def test_a_message_is_answered_end_to_end(inbound_env: dict, gateway: GatewayStandIn, tmp_path: Path) -> None:
    with running_worker("inbound", inbound_env, tmp_path, concurrency=2):
        enqueue_message(inbound_payload("Сколько стоит стрижка?", chat="8 (911) 234-56-78"))
        wait_until(lambda: gateway.count() == 1, 30, "the reply at the gateway")
        # send_task marks messages "ignore_result: false"; the task's own choice wins, so no result fills Redis.
        assert redis.Redis.from_url(inbound_env["REDIS_URL"]).keys("celery-task-meta-*") == []
        collector = app.send_task("workers.inbound.ping").get(timeout=30)["gc"]  # a ping keeps its result
    assert collector["frozen"] > collector["tracked"], "what a child inherited (the warm assistant) is left frozen"
    reply = gateway.deliveries[0]
    assert reply.phone == "+79112345678"
    assert "Женская стрижка — 1 500 ₽–2 500 ₽" in reply.message


def test_the_same_message_delivered_twice_is_answered_once(
    inbound_env: dict, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    message = inbound_payload("Привет")
    with running_worker("inbound", inbound_env, tmp_path, concurrency=2) as worker:
        enqueue_message(message)
        enqueue_message(message)
        wait_until(lambda: gateway.count() == 1, 30, "the reply")
        wait_for_idle([worker], inbound_env["REDIS_URL"], INBOUND_LISTS, at_least=2)  # both copies handled
    assert gateway.count() == 1
    assert gateway.repeats == 0
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


def test_twenty_messages_in_one_chat_are_answered_in_order_by_two_processes(
    inbound_env: dict, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    chat = "+79110000020"
    with running_worker("inbound", inbound_env, tmp_path, concurrency=2):
        for n in range(20):
            enqueue_message(inbound_payload(f"вопрос {n}", chat=chat))
            time.sleep(0.15)
        wait_until(
            lambda: (
                db.execute("SELECT count(*) FROM messages WHERE status IN ('answered', 'merged')").fetchone()[0] == 20
            ),
            60,
            "all 20 answered",
        )
        wait_until(lambda: db.execute("SELECT bool_and(status = 'done') FROM outbox").fetchone()[0], 30, "sent")
    sent_order = [row[0] for row in db.execute("SELECT id FROM messages ORDER BY sent_at").fetchall()]
    outbox = db.execute("SELECT idempotency_key, message_ids FROM outbox ORDER BY id").fetchall()
    answered_order = [message_id for _, ids in outbox for message_id in ids]
    assert answered_order == sent_order, "every message answered once, in the order it was sent"
    expected = [gateway_id(COMPANY, key) for key, _ in outbox]
    assert [d.id for d in gateway.to(chat, company=COMPANY)] == expected, "replies reached the gateway in order"
    assert gateway.repeats == 0


def test_without_a_burst_window_messages_racing_in_three_chats_are_answered_once_in_order(
    inbound_env: dict, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    """With no burst window the receiving task answers and delivers; two of them racing in one chat still
    answer every message once and deliver the replies in order."""
    chats = ["+79110000031", "+79110000032", "+79110000033"]
    env = {**inbound_env, "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0"}
    with running_worker("inbound", env, tmp_path, concurrency=2):
        for n in range(15):
            for chat in chats:
                enqueue_message(inbound_payload(f"вопрос {n}", chat=chat))
        wait_until(lambda: gateway.count() == db.execute("SELECT count(*) FROM outbox").fetchone()[0] > 0, 60, "sent")
        wait_until(
            lambda: db.execute("SELECT count(*) FROM messages WHERE status = 'pending'").fetchone()[0] == 0,
            60,
            "all 45 answered",
        )
        wait_until(lambda: db.execute("SELECT bool_and(status = 'done') FROM outbox").fetchone()[0], 30, "sent")
    assert_each_chat_answered_once_in_order(db, gateway, chats)


def test_without_a_burst_window_a_gateway_outage_is_retried_until_the_reply_is_delivered(
    inbound_env: dict, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    gateway.fail_next(3)
    with running_worker("inbound", {**inbound_env, "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0"}, tmp_path):
        enqueue_message(inbound_payload("Привет"))
        wait_until(lambda: gateway.count() == 1, 60, "the reply after the outage")
    assert db.execute("SELECT status, attempts FROM outbox").fetchone() == ("done", 4)


def test_a_burst_is_answered_once(
    inbound_env: dict, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    env = {**inbound_env, "FLEET_INBOUND__BURST_WINDOW_SECONDS": "1.5"}
    with running_worker("inbound", env, tmp_path, concurrency=2) as worker:
        for text in ("Здравствуйте", "1", "5", "меню", "2"):
            enqueue_message(inbound_payload(text))
        wait_until(lambda: gateway.count() == 1, 30, "one merged reply")
        wait_for_idle([worker], env["REDIS_URL"], INBOUND_LISTS, at_least=5)  # every message's tasks ended
    assert gateway.count() == 1
    body = gateway.deliveries[0].message
    assert body.index("Наши услуги") < body.index("Наши мастера") < body.index("Выберите услугу")
    assert db.execute("SELECT array_length(message_ids, 1) FROM outbox").fetchone()[0] == 5


def test_malformed_payloads_become_dead_letters_while_valid_messages_flow(
    inbound_env: dict, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    good = inbound_payload("Привет", chat="+79110000077")
    bad = {
        "missing": {"company_id": COMPANY, "text": "нет chat_id"},
        "types": {**inbound_payload("x"), "company_id": "много", "sent_at": 5},
        "huge": inbound_payload("я" * 20_000),
        "company": {**inbound_payload("привет"), "company_id": 1},
        "shape": "not an object",
        "phone": inbound_payload("привет", chat="12"),
    }
    with running_worker("inbound", inbound_env, tmp_path, concurrency=2):
        for value in bad.values():
            app.send_task(TASK_NAME, kwargs={"payload": value})
        app.send_task(TASK_NAME, kwargs={"payload": good, "priority_boost": True})
        enqueue_message(good)
        wait_until(lambda: gateway.count() == 1, 30, "the valid message's reply")
        wait_until(lambda: db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 7, 30, "7 dead letters")
    reasons = [row[0] for row in db.execute("SELECT reason FROM dead_letters ORDER BY id").fetchall()]
    joined = "\n".join(reasons)
    assert "chat_id: Field required" in joined
    assert "company_id: Input should be a valid integer" in joined
    assert "text: String should have at most 16384 characters" in joined
    assert "company 1 is not served" in joined
    assert "chat_id: phone has an invalid length" in joined
    assert "unexpected task arguments: ['priority_boost']" in joined
    huge = db.execute("SELECT payload->>'text' FROM dead_letters WHERE reason LIKE 'invalid payload: text%'").fetchone()
    assert len(huge[0]) == 20_000, "the rejected message is kept whole"
    assert gateway.to("+79110000077")[0].message.startswith("Здравствуйте")


def test_a_worker_killed_mid_message_answers_it_exactly_once_after_restart(
    inbound_env: dict, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    marker = tmp_path / "slow-assistant.pid"
    env = {
        **inbound_env,
        "FLEET_ASSISTANT": "tests.support.slow_assistant:SlowAssistant",
        "SLOW_ASSISTANT_MARKER": str(marker),
    }
    with running_worker("inbound", env, tmp_path, concurrency=1) as worker:
        enqueue_message(inbound_payload("Привет", chat="+79110000099"))
        wait_until(marker.exists, 30, "the assistant to start answering")
        time.sleep(0.3)
        os.kill(int(marker.read_text()), signal.SIGKILL)  # the child dies inside the answering transaction
        wait_until(lambda: gateway.count() == 1, 60, f"the reply after the restart\n{worker.output()}")
        wait_for_idle([worker], env["REDIS_URL"], INBOUND_LISTS, at_least=2)  # the lost run and the redelivery
    assert gateway.count() == 1
    assert gateway.repeats == 0
    assert db.execute("SELECT status, attempts FROM messages").fetchone() == ("answered", 2)
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


def test_a_gateway_outage_is_retried_until_the_reply_is_delivered(
    inbound_env: dict, gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    gateway.fail_next(3)
    with running_worker("inbound", inbound_env, tmp_path, concurrency=1):
        enqueue_message(inbound_payload("Привет"))
        wait_until(lambda: gateway.count() == 1, 60, "the reply after the outage")
    assert db.execute("SELECT status, attempts FROM outbox").fetchone() == ("done", 4)


# ---- a main process killed between popping a message and recording it loses nothing --------------------
def _orphan(client: redis.Redis, consumer: str, message: dict) -> str:
    """What a consumer that died right after its pop leaves behind: one entry in its in-flight list."""
    key = inflight_key("inbound", consumer)
    client.lpush(key, json.dumps(envelope(TASK_NAME, kwargs={"payload": message}, queue="inbound")))
    client.sadd(INFLIGHT_KEYS, key)
    return key


def _stored(db: psycopg.Connection, gateway_message_id: str) -> bool:
    return (
        db.execute("SELECT 1 FROM messages WHERE gateway_message_id = %s", (gateway_message_id,)).fetchone() is not None
    )


def test_a_message_popped_by_a_consumer_that_died_is_requeued_and_answered(
    db: psycopg.Connection, inbound_env: dict, gateway: GatewayStandIn, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(inbound_env["REDIS_URL"])
    lost = inbound_payload("1")
    key = _orphan(client, "deadhost.4242.cafe0000", lost)
    with running_worker("inbound", {**inbound_env, "FLEET_BROKER_INFLIGHT_TTL_SECONDS": "2"}, tmp_path):
        wait_until(lambda: _stored(db, lost["gateway_message_id"]), 30, "the orphaned message stored")
        wait_until(lambda: gateway.count() == 1, 30, "its reply at the gateway")
    assert client.llen(key) == 0
    assert not client.sismember(INFLIGHT_KEYS, key)


def test_the_in_flight_entries_of_a_live_consumer_are_left_alone(
    db: psycopg.Connection, inbound_env: dict, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(inbound_env["REDIS_URL"])
    busy = inbound_payload("1")
    consumer = "otherhost.77.beef0000"
    client.set(ALIVE + consumer, "1", ex=120)
    key = _orphan(client, consumer, busy)
    with running_worker("inbound", {**inbound_env, "FLEET_BROKER_INFLIGHT_TTL_SECONDS": "2"}, tmp_path) as worker:
        served = inbound_payload("5")
        enqueue_message(served)
        wait_until(lambda: _stored(db, served["gateway_message_id"]), 30, "a fresh message stored")
        time.sleep(3)  # more than a scan period of the 2 s lifetime
        assert "ready." in worker.output()
    assert client.llen(key) == 1, "a live consumer's in-flight message was taken from it"
    assert not _stored(db, busy["gateway_message_id"])


def test_a_worker_pops_through_its_in_flight_list_and_leaves_it_empty(
    db: psycopg.Connection, inbound_env: dict, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(inbound_env["REDIS_URL"])
    with running_worker("inbound", inbound_env, tmp_path, concurrency=2):
        sent = [inbound_payload(str(n % 5 + 1), chat=f"+7911000{n:04d}") for n in range(30)]
        for message in sent:
            enqueue_message(message)
        wait_until(lambda: all(_stored(db, m["gateway_message_id"]) for m in sent), 60, "every message stored")
        keys = [k.decode() for k in client.smembers(INFLIGHT_KEYS)]
        consuming = [k for k in keys if k.startswith("fleet:inflight:inbound:")]
        assert consuming, "the worker does not pop through an in-flight list"
        # An entry is in flight only between its pop and kombu's record of it: once the work is done, none stays.
        wait_until(lambda: sum(client.llen(k) for k in consuming) == 0, 15, "the in-flight lists empty after the work")
