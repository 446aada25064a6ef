"""Storing and answering chat messages in-process: dedupe, order, bursts, the booking conversation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from ops.standins.gateway import GatewayStandIn
from shared.core.resources import take
from shared.core.settings import get_settings
from shared.data.repositories.calendar import BookingRepository
from shared.data.repositories.conversations import OutboxRepository
from shared.inbound.drain import drain_chat, merge_replies
from shared.inbound.outbox import split_message
from shared.inbound.payload import InboundPayload
from shared.inbound.store import UnknownCompanyError, store_message
from tests.support.conversation import CHAT, NOW, message, number_of, reply_body, say
from tests.support.seed import COMPANY
from workers.inbound import hand_on

MOSCOW = ZoneInfo("Europe/Moscow")


@pytest.mark.usefixtures("answering_salon")
def test_a_redelivered_message_is_stored_once_and_answered_once(answering_salon: psycopg.Connection) -> None:
    payload = message("Привет")
    first, again = store_message(payload), store_message(payload)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert first.id == again.id
    assert len(drain_chat(COMPANY, CHAT, now=NOW).outbox_ids) == 1
    assert drain_chat(COMPANY, CHAT, now=NOW).outbox_ids == []
    assert answering_salon.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


@pytest.mark.usefixtures("answering_salon")
def test_each_chat_gets_its_own_sequence() -> None:
    seqs = [store_message(message("a", chat)).chat_seq for chat in (CHAT, CHAT, "+79110000001", CHAT)]
    assert seqs == [1, 2, 1, 3]


@pytest.mark.usefixtures("answering_salon")
def test_unknown_company_is_refused() -> None:
    with pytest.raises(UnknownCompanyError):
        store_message(InboundPayload(company_id=1, chat_id=CHAT, gateway_message_id="x", text="hi", sent_at=NOW))


def test_a_burst_is_answered_together_in_order(answering_salon: psycopg.Connection) -> None:
    for text in ("Привет", "1", "5"):
        store_message(message(text))
    result = drain_chat(COMPANY, CHAT, now=NOW)
    assert len(result.outbox_ids) == 1
    body = reply_body(result.outbox_ids[0])
    greeting, services, staff = body.index("Здравствуйте"), body.index("Наши услуги"), body.index("Наши мастера")
    assert greeting < services < staff
    statuses = answering_salon.execute("SELECT status FROM messages ORDER BY chat_seq").fetchall()
    assert [row[0] for row in statuses] == ["merged", "merged", "answered"]


def test_an_unsettled_chat_waits_for_its_burst_window(answering_salon: psycopg.Connection) -> None:
    get_settings().inbound.burst_window_seconds = 60
    store_message(message("Привет"))
    result = drain_chat(COMPANY, CHAT, now=NOW)
    assert result.unsettled
    assert result.outbox_ids == []
    assert answering_salon.execute("SELECT status FROM messages").fetchone()[0] == "pending"


def test_a_full_booking_conversation(answering_salon: psycopg.Connection) -> None:
    assert "Я помощник салона «Лиса»" in say("Здравствуйте")
    prices = say("услуги")
    assert "Женская стрижка — 1 500 ₽–2 500 ₽, 60 мин" in prices
    assert "Архивная услуга" not in prices
    choose = say("2")
    slots = say(number_of("Женская стрижка", choose))
    first_slot = "01.12 в 10:00 — Анна"
    assert f"1. {first_slot}" in slots
    booked = say("1")
    assert "Готово! Вы записаны: Женская стрижка, 01.12 в 10:00, мастер Анна" in booked
    row = answering_salon.execute("SELECT staff_id, starts_at, source, status FROM bookings").fetchone()
    assert row == (1, datetime(2026, 12, 1, 7, 0, tzinfo=UTC), "assistant", "confirmed")
    # The slot is no longer offered, to this client or anyone else.
    again = say(number_of("Женская стрижка", say("2")))
    assert "01.12 в 10:00 — Анна" not in again
    assert "01.12 в 11:00 — Анна" in again
    other = say("2", chat="+79110000002")
    assert "01.12 в 10:00 — Анна" not in say(number_of("Женская стрижка", other), chat="+79110000002")
    say("меню")
    assert "01.12 в 10:00 — Женская стрижка" in say("3")
    cancel = say("4")
    assert "Отменить запись Женская стрижка, 01.12 в 10:00, мастер Анна?" in cancel, "asked before it is done"
    assert answering_salon.execute("SELECT status FROM bookings").fetchone()[0] == "confirmed"
    assert "отменена" in say("1")
    assert answering_salon.execute("SELECT status FROM bookings").fetchone()[0] == "cancelled"


def test_booking_a_slot_taken_meanwhile_gets_a_clear_answer(answering_salon: psycopg.Connection) -> None:
    slots = say(number_of("Женская стрижка", say("2")))
    assert "1. 01.12 в 10:00 — Анна" in slots
    BookingRepository().create(
        {
            "company_id": COMPANY,
            "staff_id": 1,
            "starts_at": NOW + timedelta(hours=1),
            "ends_at": NOW + timedelta(hours=2),
        }
    )
    answer = say("1")
    assert answer.startswith("Это время только что заняли.")
    assert "01.12 в 10:00 — Анна" not in answer
    assert answering_salon.execute("SELECT count(*) FROM bookings WHERE source = 'assistant'").fetchone()[0] == 0


@pytest.mark.usefixtures("answering_salon")
def test_out_of_range_choice_and_nonsense_are_answered_politely() -> None:
    say("2")
    assert say("42").startswith("Пожалуйста, выберите номер от 1 до")
    nonsense = say("абракадабра")
    assert nonsense.startswith("Я помощник салона «Лиса»"), nonsense
    assert "Напишите цифру" in nonsense


def test_media_without_text_gets_an_answer(answering_salon: psycopg.Connection) -> None:
    store_message(message("", media={"type": "image", "description": "фото ногтей"}))
    result = drain_chat(COMPANY, CHAT, now=NOW)
    assert "понимаю только текст" in reply_body(result.outbox_ids[0])


def test_merge_keeps_every_answer_and_drops_repeats() -> None:
    assert merge_replies(["a", "a", "b", "", "a"]) == "a\n\nb\n\na"


def test_long_replies_split_at_paragraphs_within_the_limit() -> None:
    paragraphs = [f"Абзац {n}: " + "слово " * 60 for n in range(40)]
    parts = split_message("\n\n".join(paragraphs), 4096)
    assert len(parts) > 1
    assert all(len(part) <= 4096 for part in parts)
    assert "\n\n".join(parts) == "\n\n".join(paragraphs)
    assert all(part.startswith("Абзац") for part in parts)
    assert split_message("x" * 9000, 4096) == ["x" * 4096, "x" * 4096, "x" * 808]


def test_a_message_that_keeps_failing_is_dead_lettered_and_the_chat_moves_on(
    answering_salon: psycopg.Connection,
) -> None:
    settings = get_settings()
    settings.assistant = "tests.support.failing_assistant:FailingAssistant"
    try:
        store_message(message("💥 сломай всё"))
        store_message(message("Привет"))
        isolate, failures, answered = False, 0, []
        for _ in range(10):  # what the drain task's retries do
            try:
                result = drain_chat(COMPANY, CHAT, isolate=isolate, now=NOW)
            except RuntimeError as exc:
                failures += 1
                isolate = isolate or exc.batch_size > 1
                continue
            answered += result.outbox_ids
            if not result.more_pending and result.outbox_ids:
                break
    finally:
        settings.assistant = "shared.assistant.rules:RuleBasedAssistant"
    assert failures == settings.inbound.max_attempts
    statuses = answering_salon.execute("SELECT body, status, attempts FROM messages ORDER BY chat_seq").fetchall()
    # The greeting shared the first (failed) attempt of the burst, then the bad message was tried alone.
    assert statuses == [("💥 сломай всё", "failed", 3), ("Привет", "answered", 2)]
    letter = answering_salon.execute("SELECT source, reason, reference FROM dead_letters").fetchone()
    assert letter[0] == "inbound.answer"
    assert "answering failed 3 times: RuntimeError" in letter[1]
    assert "Здравствуйте" in reply_body(answered[-1])


def test_the_published_payload_schema_is_the_models() -> None:
    import json
    from pathlib import Path

    from shared.inbound.payload import payload_json_schema

    published = (Path(__file__).resolve().parents[1] / "docs" / "inbound-message.schema.json").read_text("utf-8")
    assert json.loads(published) == payload_json_schema()


def test_fleet_enqueue_file_mode_enqueues_valid_lines_and_dead_letters_the_rest(
    answering_salon: psycopg.Connection, fleet_env: dict[str, str], tmp_path
) -> None:
    import json
    import subprocess
    import sys

    import redis

    from tests.support.processes import ROOT

    lines = [
        json.dumps(message("Привет").model_dump(mode="json")),
        "{not json",
        json.dumps(
            {"company_id": COMPANY, "chat_id": "12", "gateway_message_id": "a", "text": "x", "sent_at": NOW.isoformat()}
        ),
        "",
        json.dumps(message("Второе").model_dump(mode="json")),
    ]
    path = tmp_path / "messages.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "enqueue", "--file", str(path)],
        cwd=ROOT,
        env=fleet_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "enqueued 2, rejected 2" in result.stdout
    assert "line 2: invalid inbound message: line: not JSON" in result.stderr
    assert "line 3: invalid inbound message: chat_id" in result.stderr
    assert redis.Redis.from_url(fleet_env["REDIS_URL"]).llen("inbound") == 2
    references = [
        row[0] for row in answering_salon.execute("SELECT reference FROM dead_letters ORDER BY id").fetchall()
    ]
    assert references == [f"{path}:2", f"{path}:3"]


# ---- the client's own words ------------------------------------------------------------------------------
def offered_slots(db: psycopg.Connection) -> list[tuple[int, datetime]]:
    data = db.execute("SELECT data FROM dialog_contexts WHERE chat_id = %s", (CHAT,)).fetchone()[0]
    return [(staff, datetime.fromisoformat(start)) for staff, start in data["slots"]]


def test_a_booking_asked_in_words_offers_only_the_asked_day_and_window(answering_salon: psycopg.Connection) -> None:
    ask = say("Хочу записаться на стрижку завтра после 15")
    assert "Выберите услугу" in ask, "two haircuts match: the client chooses"
    assert "Маникюр" not in ask
    slots = say(number_of("Мужская стрижка", ask))
    offered = offered_slots(answering_salon)
    assert offered, slots
    for _, start in offered:
        local = start.astimezone(MOSCOW)
        assert local.date() == date(2026, 12, 2), slots
        assert local.hour >= 15, slots
    assert "02.12 в 15:00" in slots


def test_a_master_and_a_weekday_in_words(answering_salon: psycopg.Connection) -> None:
    ask = say("Можно к Анне в пятницу?")
    assert "Маникюр" not in ask, "Анна does not do manicures"
    say(number_of("Женская стрижка", ask))
    offered = offered_slots(answering_salon)
    assert offered
    assert {staff for staff, _ in offered} == {1}
    assert {start.astimezone(MOSCOW).date() for _, start in offered} == {date(2026, 12, 4)}


def test_a_price_question_in_words_and_a_window_with_nothing_free(answering_salon: psycopg.Connection) -> None:
    prices = say("сколько стоит маникюр")
    assert "Маникюр с покрытием — от 2 000 ₽, 90 мин" in prices
    assert "стрижка" not in prices
    late = say("женская стрижка завтра после 19")
    assert "В это время свободных окон нет" in late
    assert "1. 01.12 в 10:00 — Анна" in late, "the nearest free time instead"


def test_cancel_in_words_then_the_menu_still_works(answering_salon: psycopg.Connection) -> None:
    assert "Женская стрижка: свободное время" in say("женская стрижка")
    assert "Готово! Вы записаны" in say("1")
    assert "Отменить запись Женская стрижка" in say("отмените мою запись")
    assert "отменена" in say("1")
    assert "Напишите цифру" in say("что-то непонятное")


def _outbox(db: psycopg.Connection, outbox_id: int) -> tuple[int, bool]:
    """(attempts, leased: not due before a minute from now)."""
    return db.execute(
        "SELECT attempts, next_attempt_at > now() + interval '1 minute' FROM outbox WHERE id = %s", (outbox_id,)
    ).fetchone()


def test_a_reply_claimed_with_its_answer_is_leased_to_the_drain_and_counts_its_attempt(
    answering_salon: psycopg.Connection,
) -> None:
    """The inbound worker sends the reply right after answering: the drain claims it in the answer's own
    transaction (a round trip fewer), so no other sender can take it meanwhile, and the attempt is counted."""
    store_message(message("Привет"))
    result = drain_chat(COMPANY, CHAT, now=NOW, claim_lease=120)
    (outbox_id,) = result.outbox_ids
    claimed = result.claimed[outbox_id]
    assert claimed is not None
    assert (claimed["id"], claimed["attempts"]) == (outbox_id, 1)
    assert _outbox(answering_salon, outbox_id) == (1, True)
    assert OutboxRepository().claim(outbox_id, 120) is None, "leased to the drain's caller"


def test_a_reply_behind_an_undelivered_one_is_not_claimed_and_a_drain_without_a_lease_claims_nothing(
    answering_salon: psycopg.Connection,
) -> None:
    store_message(message("Привет"))
    (first,) = drain_chat(COMPANY, CHAT, now=NOW).outbox_ids  # written, not claimed, not delivered
    assert _outbox(answering_salon, first) == (0, False)
    store_message(message("1"))
    result = drain_chat(COMPANY, CHAT, now=NOW, claim_lease=120)
    (second,) = result.outbox_ids
    assert result.claimed == {second: None}, "the chat's earlier reply goes first; its delivery hands this one on"
    assert _outbox(answering_salon, second) == (0, False)


def test_a_reply_the_answer_could_not_claim_is_sent_once_the_reply_before_it_is_done(
    answering_salon: psycopg.Connection, gateway: GatewayStandIn
) -> None:
    """The race this guards: the chat's earlier reply was delivered between this answer's claim (refused: the
    earlier one was pending) and this answer's commit, so that delivery found nothing to hand on. The task that
    answered claims its reply again after the commit and sends it."""
    store_message(message("Привет"))
    (first,) = drain_chat(COMPANY, CHAT, now=NOW).outbox_ids
    store_message(message("1"))
    result = drain_chat(COMPANY, CHAT, now=NOW, claim_lease=120)
    (second,) = result.outbox_ids
    assert result.claimed == {second: None}
    OutboxRepository().finish(first)  # the earlier reply's delivery, done before this reply was committed
    settings = get_settings().gateway
    url = settings.send_url
    settings.send_url = gateway.url
    take("gateway")  # a client made for another test's gateway
    try:
        hand_on(result, COMPANY, CHAT)
    finally:
        settings.send_url = url
        take("gateway")
    assert [d.message for d in gateway.to(CHAT, company=COMPANY)] == [reply_body(second)]
    assert _outbox(answering_salon, second)[0] == 1
    assert answering_salon.execute("SELECT status FROM outbox WHERE id = %s", (second,)).fetchone()[0] == "done"
