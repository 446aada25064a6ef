"""One salon answering in-process (no workers): its seed data, and a client's messages answered one by one."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import get_settings
from shared.data.repositories.calendar import StaffScheduleRepository
from shared.data.repositories.conversations import OutboxRepository
from shared.inbound.drain import DrainResult, drain_chat
from shared.inbound.payload import InboundPayload
from shared.inbound.store import store_message
from tests.support.payloads import inbound_message
from tests.support.seed import COMPANY, seed_salon

CHAT = "+79112345678"
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)  # Tuesday, 09:00 in Moscow
_ids = itertools.count(1)


@contextmanager
def salon_answering_at_once() -> Iterator[None]:
    """The seed salon with a week of working hours (10-13, 14-18) for Анна and Мария, answering at once."""
    open_process_pool(role="test", max_size=3, wait=True)
    seed_salon()
    StaffScheduleRepository().bulk_upsert(
        [
            {
                "company_id": COMPANY,
                "staff_id": staff,
                "date": date(2026, 12, 1) + timedelta(days=n),
                "slots": [{"from": "10:00", "to": "13:00"}, {"from": "14:00", "to": "18:00"}],
            }
            for staff in (1, 2)
            for n in range(7)
        ]
    )
    inbound = get_settings().inbound
    window = inbound.burst_window_seconds
    inbound.burst_window_seconds = 0
    try:
        yield
    finally:
        inbound.burst_window_seconds = window
        close_process_pool()


def message(text: str, chat: str = CHAT, **extra: object) -> InboundPayload:
    """A client's message sent a second after the previous one, on the conversation's fixed clock."""
    return inbound_message(text, chat, sent_at=(NOW + timedelta(seconds=next(_ids))).isoformat(), **extra)


def answer(text: str, chat: str = CHAT) -> DrainResult:
    store_message(message(text, chat))
    return drain_chat(COMPANY, chat, now=NOW)


def say(text: str, chat: str = CHAT) -> str:
    """One client message, answered; returns the reply the client would get."""
    result = answer(text, chat)
    assert len(result.outbox_ids) == 1, result
    return reply_body(result.outbox_ids[0])


def reply_body(outbox_id: int) -> str:
    return OutboxRepository().get({"id": outbox_id})["body"]


def number_of(option: str, reply: str) -> str:
    match = re.search(rf"^(\d+)\. {re.escape(option)}", reply, re.MULTILINE)
    assert match, f"{option!r} not offered in:\n{reply}"
    return match.group(1)
