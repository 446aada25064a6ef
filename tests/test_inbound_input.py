"""Inbound input at its boundaries: what is stored, what is cleaned, and dead letters that cannot fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis

from ops.standins.gateway import GatewayStandIn
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import InboundSettings, get_settings, load_settings
from shared.data.dead_letters import SPOOL_KEY, file_spooled, record_dead_letter
from shared.inbound.store import ConflictingRepeatError, settle_sent_at, store_message
from tests.support.payloads import inbound_message, inbound_payload
from tests.support.processes import running_worker, wait_until
from tests.support.seed import COMPANY
from workers.producer import enqueue_message


@pytest.mark.parametrize(
    ("chat_id", "phone"),
    [
        ("79991234567@c.us", "+79991234567"),
        ("79991234567@s.whatsapp.net", "+79991234567"),
        ("79991234567:23@s.whatsapp.net", "+79991234567"),
        (" 8 (999) 123-45-67 ", "+79991234567"),
        (79991234567, "+79991234567"),
    ],
)
def test_whatsapp_ids_and_phone_shapes_are_read_as_the_phone(chat_id: object, phone: str) -> None:
    assert inbound_message(chat="+79110000001", chat_id=chat_id).chat_id == phone


def test_free_text_is_cleaned_and_the_change_noted(salon: psycopg.Connection) -> None:
    cleaned = inbound_message(
        chat="+79110000001", text="Запишите\x00 меня \ud83d", media={"type": "image", "description": "фото\x00"}
    )
    assert cleaned.text == "Запишите меня \ufffd"
    assert cleaned.media is not None
    assert cleaned.media.description == "фото"
    stored = store_message(cleaned)
    notes = salon.execute("SELECT input_notes FROM messages WHERE id = %s", (stored.id,)).fetchone()[0]
    assert notes == [
        "text: removed 1 NUL character(s)",
        "text: replaced 1 lone UTF-16 surrogate(s) with U+FFFD",
        "media.description: removed 1 NUL character(s)",
    ]


def test_sent_at_outside_the_window_is_replaced_by_the_receive_time_with_the_original_kept() -> None:
    window = InboundSettings(sent_at_max_age_hours=48, sent_at_max_ahead_seconds=300)
    received = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    inside = received - timedelta(hours=47)
    assert settle_sent_at(inside, received, window) == (inside, None)
    for sent_at in (
        received - timedelta(hours=49),
        received + timedelta(seconds=301),
        datetime.max.replace(tzinfo=UTC),
    ):
        settled, note = settle_sent_at(sent_at, received, window)
        assert settled == received
        assert note is not None
        assert sent_at.isoformat() in note


def test_a_repeated_id_with_other_content_is_refused_not_dropped(salon: psycopg.Connection) -> None:
    first = inbound_message(chat="+79110000001")
    assert not store_message(first).duplicate
    assert store_message(first).duplicate, "the same content again is a re-delivery"
    with pytest.raises(ConflictingRepeatError, match="with other content"):
        store_message(inbound_message(chat="+79110000001", gateway_message_id=first.gateway_message_id, text="Другое"))
    assert salon.execute("SELECT count(*) FROM messages").fetchone()[0] == 1


def test_a_dead_letter_keeps_values_postgres_would_refuse(salon: psycopg.Connection) -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    deep: object = "bottom"
    for _ in range(200):
        deep = [deep]
    hostile = {
        "text": "a\x00b\ud800",
        "score": float("nan"),
        "limit": float("-inf"),
        "huge": 10**5000,
        "raw": b"\xff\xfe",
        1: "an integer key",
        "set": {1},
        "deep": deep,
        "object": Hostile(),
    }
    letter_id = record_dead_letter(
        "test\x00source", "reason with \ud800", hostile, company_id=2**64, reference="ref\x00", task_id=True
    )
    assert letter_id is not None
    row = salon.execute(
        "SELECT source, reason, company_id, reference, payload FROM dead_letters WHERE id = %s", (letter_id,)
    ).fetchone()
    source, reason, company_id, reference, stored = row
    assert (source, reason, company_id, reference) == ("testsource", "reason with \ufffd", None, "ref")
    kept = stored["payload"]
    assert kept["text"] == "ab\ufffd"
    assert kept["score"] == "nan"
    assert kept["limit"] == "-inf"
    assert kept["huge"].startswith("<integer of ")
    assert kept["1"] == "an integer key"
    assert stored["company_id"] == 2**64, "an out-of-range company id stays in the payload"
    assert any("not a bigint id" in note for note in stored["notes"])
    assert any("NUL" in note for note in stored["notes"])


def test_a_dead_letter_waits_in_redis_while_postgres_is_away_and_is_filed_after(
    db: psycopg.Connection, clean_redis: str
) -> None:
    client = redis.Redis.from_url(clean_redis)
    unreachable = load_settings(database_url="postgresql://postgres@127.0.0.1:1/fleet_test")
    open_process_pool(role="test", settings=unreachable, timeout=0.5)
    try:
        assert record_dead_letter("test", "kept while the database is away", {"text": "привет"}) is None
    finally:
        close_process_pool()
    assert client.llen(SPOOL_KEY) == 1
    open_process_pool(role="test", max_size=2, wait=True)
    try:
        assert file_spooled() == 1
    finally:
        close_process_pool()
    assert client.llen(SPOOL_KEY) == 0
    reason, kept = db.execute("SELECT reason, payload FROM dead_letters").fetchone()
    assert reason.startswith("kept while the database is away (spooled at ")
    assert kept == {"text": "привет"}


def _settled(db: psycopg.Connection, chat: str) -> bool:
    pending = db.execute(
        "SELECT (SELECT count(*) FROM messages WHERE chat_id = %s AND status NOT IN ('answered', 'failed', 'merged'))"
        " + (SELECT count(*) FROM outbox WHERE chat_id = %s AND status <> 'done')",
        (chat, chat),
    ).fetchone()[0]
    return pending == 0


@pytest.mark.slow
def test_a_message_that_cannot_be_read_is_dead_lettered_and_the_next_in_its_chat_answered(
    db: psycopg.Connection, inbound_env: dict[str, str], gateway: GatewayStandIn, tmp_path: Path
) -> None:
    """A row written before this validation existed (or by hand): a year PostgreSQL holds and Python cannot,
    and a media value nested deeper than Python's JSON decoder goes. It sorts first in its chat."""
    chat = "+79110000321"
    db.execute(
        "INSERT INTO messages (company_id, chat_id, gateway_message_id, chat_seq, body, media, sent_at, received_at)"
        " VALUES (%s, %s, 'poisoned', 1, 'старое', (repeat('[', 5000) || repeat(']', 5000))::jsonb,"
        " '4000-01-01 BC', now() - interval '1 hour')",
        (COMPANY, chat),
    )
    with running_worker("inbound", inbound_env, tmp_path, concurrency=2) as worker:
        enqueue_message(inbound_payload("Привет", chat=chat))
        wait_until(lambda: gateway.to(chat), 90, f"the good message's reply\n{worker.output()[-3000:]}")
        # Both messages settled and the reply's delivery recorded: nothing left that could send a second one.
        wait_until(lambda: _settled(db, chat), 30, "the chat's messages and replies to settle")
    assert len(gateway.to(chat)) == 1
    statuses = dict(db.execute("SELECT gateway_message_id, status FROM messages").fetchall())
    assert statuses.pop("poisoned") == "failed"
    assert list(statuses.values()) == ["answered"]
    reason, kept = db.execute("SELECT reason, payload FROM dead_letters WHERE source = 'inbound.answer'").fetchone()
    assert reason.startswith(f"answering failed {get_settings().inbound.max_attempts} times: ")
    assert kept["text"] == "старое"
    assert kept["sent_at"].endswith("BC")
