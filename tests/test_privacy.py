"""Personal data stays in: phones masked in every shape, inbound task arguments hidden from events and Flower,
and old chat text deleted on schedule."""

from __future__ import annotations

import base64
import json
import time

import psycopg
import pytest
import redis

from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import RetentionSettings
from shared.core.topology import hide_private_arguments
from shared.data.retention import apply_retention
from shared.observability.sentry import scrub_text
from tests.support.seed import COMPANY, seed_salon
from workers.app import app


@pytest.mark.parametrize(
    "text",
    [
        "позвоните 89991234567.",
        "тел89991234567",
        "+7 (999) 123-45-67",
        "8-999-123-45-67, спасибо",
        "79991234567@c.us",
        "+7 999 123 45 67",
    ],
)
def test_phones_are_masked_in_the_shapes_people_write_them(text: str) -> None:
    masked = scrub_text(text)
    assert "[filtered]" in masked
    assert not any(run in masked for run in ("9991234567", "123-45-67", "123 45 67"))


@pytest.mark.parametrize("text", ["company 962302", "record 9000011", "task 118f6bca-5ec2-4826-9bcc"])
def test_ids_stay_readable(text: str) -> None:
    assert scrub_text(text) == text


def test_inbound_task_arguments_never_reach_events(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    app.send_task("workers.inbound.receive_message", kwargs={"payload": {"chat_id": "+79991234567", "text": "секрет"}})
    app.send_task("workers.yclients.sync_entity", args=["staff", COMPANY])
    inbound = json.loads(client.lindex("inbound", 0))
    assert inbound["headers"]["argsrepr"] == inbound["headers"]["kwargsrepr"] == "<hidden: personal data>"
    assert "79991234567" in base64.b64decode(inbound["body"]).decode(), "the task itself still gets its payload"
    sync = json.loads(client.lindex("yclients", 0))
    assert str(COMPANY) in sync["headers"]["argsrepr"], "other tasks keep readable arguments"
    # A producer in another language sets its own reprs; the worker replaces them before any event is sent.
    headers = {"task": "workers.inbound.receive_message", "argsrepr": "('+79991234567',)", "kwargsrepr": "{}"}
    hide_private_arguments(headers, headers["task"])
    assert "79991234567" not in json.dumps(headers)


def test_inbound_task_arguments_never_reach_the_task_sent_event(clean_redis: str) -> None:
    """Celery builds the task-sent event (Flower keeps what it says) from the reprs before `before_task_publish`
    runs: they are hidden where the message is made (workers/app.py), or the event carried the chat."""
    events = redis.Redis.from_url(clean_redis).pubsub()
    events.psubscribe("*celeryev*")
    assert events.get_message(timeout=5)["type"] == "psubscribe"  # subscribed before anything is sent
    ours = {
        app.send_task(
            "workers.inbound.receive_message", kwargs={"payload": {"chat_id": "+79991234567", "text": "секрет"}}
        ).id,
        app.send_task("workers.yclients.sync_entity", args=["staff", COMPANY]).id,
    }
    # Pub/sub channels span Redis' databases: other test processes' workers publish here too (events singly or
    # in batches), so only the task-sent events of the two tasks sent above count.
    sent: dict[str, dict] = {}
    deadline = time.monotonic() + 15
    while len(sent) < 2 and time.monotonic() < deadline:
        message = events.get_message(timeout=1)
        if message is None or message["type"] != "pmessage":
            continue
        body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
        for event in body if isinstance(body, list) else [body]:
            if isinstance(event, dict) and event.get("type") == "task-sent" and event.get("uuid") in ours:
                sent[event["name"]] = event
    events.close()
    inbound = sent["workers.inbound.receive_message"]
    assert inbound["args"] == inbound["kwargs"] == "<hidden: personal data>"
    assert "79991234567" not in json.dumps(inbound)
    assert "секрет" not in json.dumps(inbound, ensure_ascii=False)
    assert str(COMPANY) in sent["workers.yclients.sync_entity"]["args"], "other tasks keep readable arguments"


def test_retention_deletes_old_chat_text_and_keeps_pending_work_and_the_latest_sync(db: psycopg.Connection) -> None:
    open_process_pool(role="test", max_size=2, wait=True)
    try:
        seed_salon()
        for n, (status, days) in enumerate([("answered", 100), ("pending", 100), ("answered", 10)]):
            db.execute(
                "INSERT INTO messages (company_id, chat_id, gateway_message_id, chat_seq, body, sent_at, received_at,"
                " status) VALUES (%s, '+79110000001', %s, %s, 'текст', now(), now() - make_interval(days => %s), %s)",
                (COMPANY, f"w{n}", n + 1, days, status),
            )
        db.execute(
            "INSERT INTO dead_letters (source, reason, created_at) VALUES ('t', 'old', now() - interval '100 days'),"
            " ('t', 'new', now())"
        )
        for days in (400, 300):
            db.execute(
                "INSERT INTO sync_runs (company_id, entity, status, started_at) VALUES"
                " (%s, 'staff', 'succeeded', now() - make_interval(days => %s))",
                (COMPANY, days),
            )
        deleted = apply_retention(RetentionSettings(messages_days=90, dead_letters_days=90, sync_runs_days=180))
    finally:
        close_process_pool()
    assert deleted["messages"] == 1
    assert deleted["dead_letters"] == 1
    assert deleted["sync_runs"] == 1
    assert sorted(r[0] for r in db.execute("SELECT gateway_message_id FROM messages")) == ["w1", "w2"]
    assert db.execute("SELECT reason FROM dead_letters").fetchall() == [("new",)]
    assert db.execute("SELECT count(*) FROM sync_runs").fetchone()[0] == 1, "the newest run of an entity stays"
