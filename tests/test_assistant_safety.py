"""No message makes the assistant act on a misunderstanding: every message of every corpus, sent through the
real fleet (inbound and YClients workers, the YClients stand-in), in the context it was written for. Only a
message whose meaning asks for it may book (picking an offered time), cancel (a yes to "Отменить запись?") or
confirm a visit (a yes to a reminder); everything else must leave both calendars as they were."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ops.standins.yclients import YClientsStandIn
from shared.assistant.evaluation import Expected, load_corpus
from tests.support.booking_loop import COMPANY
from tests.support.processes import running_worker, wait_until
from workers.producer import enqueue_message

pytestmark = pytest.mark.slow
MOSCOW = ZoneInfo("Europe/Moscow")
CORPORA = Path(__file__).parent / "corpus"
SLOT_SERVICE, SLOT_STAFF = 1009, 1  # "Маникюр с покрытием", done by Мария Смирнова
ALLOWED = {"reminder": ("confirm", "confirm"), "cancel_question": ("yes", "cancel"), "slots": ("pick", "create")}


def _working_day(staff_id: int, after: date) -> date:
    """A day the stand-in's schedule has the master working (it gives each master one day off a week)."""
    day = after
    while (day.toordinal() + staff_id) % 7 == 0:
        day += timedelta(days=1)
    return day


def _client(db: psycopg.Connection, chat: str) -> int:
    return db.execute(
        "INSERT INTO clients (company_id, name, phone) VALUES (%s, 'Клиент', %s) RETURNING id", (COMPANY, chat)
    ).fetchone()[0]


def _booked_visit(db: psycopg.Connection, stand_in: YClientsStandIn, chat: str, k: int, first_day: date) -> int:
    """A visit the client has, in YClients and in the local calendar, each at its own staff and hour."""
    staff_id = 2 + k % 7
    day = first_day + timedelta(days=k // 70)
    start = datetime.combine(day, datetime.min.time(), MOSCOW).replace(hour=10 + (k // 7) % 10)
    record = stand_in.book_in_widget(COMPANY, staff_id, start, 1002, chat, "Клиент")
    assert record is not None, (staff_id, start)
    return db.execute(
        "INSERT INTO bookings (company_id, yclients_id, client_id, staff_id, service_id, services, starts_at, ends_at,"
        " status, crm_state, created_at) VALUES (%s, %s, %s, %s, 1002, %s, %s, %s, 'confirmed', 'synced',"
        " now() - interval '3 days') RETURNING id",
        (COMPANY, record, _client(db, chat), staff_id, Jsonb([{"id": 1002, "title": "Мужская стрижка"}]), start,
         start + timedelta(hours=1)),
    ).fetchone()[0]  # fmt: skip


def _context(db: psycopg.Connection, chat: str, state: str, data: dict) -> None:
    db.execute(
        "INSERT INTO dialog_contexts (company_id, chat_id, state, data) VALUES (%s, %s, %s, %s)",
        (COMPANY, chat, state, Jsonb(data)),
    )


def _calendar(db: psycopg.Connection) -> dict[str, tuple]:
    """Each client's bookings as (status, start, master), by chat."""
    rows = db.execute(
        "SELECT c.phone, array_agg((b.status, b.starts_at, b.staff_id)::text ORDER BY b.id) FROM bookings b"
        " JOIN clients c ON c.id = b.client_id GROUP BY c.phone"
    ).fetchall()
    return dict(rows)


def _actions(db: psycopg.Connection, chat: str, before: dict[str, tuple], after: dict[str, tuple]) -> set[str]:
    """What changed in the salon's calendar for this client: CRM operations, and the local bookings."""
    kinds = {
        row[0]
        for row in db.execute(
            "SELECT o.kind FROM crm_operations o JOIN bookings b ON b.id = o.booking_id"
            " JOIN clients c ON c.id = b.client_id WHERE c.phone = %s",
            (chat,),
        )
    }
    if before.get(chat) != after.get(chat):
        kinds.add("changed locally")
    return kinds


@pytest.fixture
def workers(loop_env: dict[str, str], tmp_path: Path) -> Iterator[None]:
    """Two inbound children (the corpus is answered in parallel) and a YClients worker."""
    with running_worker("inbound", loop_env, tmp_path, concurrency=2), running_worker("yclients", loop_env, tmp_path):
        yield


@pytest.mark.usefixtures("workers")
def test_no_message_books_cancels_moves_or_confirms_what_it_did_not_ask_for(
    loop_stand_in: YClientsStandIn, db: psycopg.Connection
) -> None:
    entries: list[Expected] = [m for path in sorted(CORPORA.glob("*.toml")) for m in load_corpus(path).messages]
    today = datetime.now(MOSCOW).date()
    slot_day = _working_day(SLOT_STAFF, today + timedelta(days=1))
    offered = [
        [SLOT_STAFF, datetime.combine(slot_day, datetime.min.time(), MOSCOW).replace(hour=h, minute=m).isoformat()]
        for h, m in ((10, 0), (11, 0), (12, 0), (15, 0), (16, 30), (17, 30))
    ]
    visits: dict[str, int] = {}
    chats = []
    for n, entry in enumerate(entries):
        chat = f"+7920{n:07d}"
        chats.append(chat)
        if entry.context in ("reminder", "cancel_question"):
            visits[chat] = _booked_visit(db, loop_stand_in, chat, len(visits), today + timedelta(days=2))
            if entry.context == "reminder":
                db.execute("INSERT INTO reminders (booking_id, kind) VALUES (%s, 'evening')", (visits[chat],))
                _context(db, chat, "reminder", {"booking_id": visits[chat]})
            else:
                _context(db, chat, "confirming_cancel", {"booking_id": visits[chat], "from_reminder": False})
        elif entry.context == "slots":
            _context(db, chat, "choosing_slot", {"service_id": SLOT_SERVICE, "slots": offered})
    records_before = {int(r["id"]): r for r in loop_stand_in.calendar(COMPANY)}
    calendar_before = _calendar(db)
    for n, (chat, entry) in enumerate(zip(chats, entries, strict=True)):
        enqueue_message(
            {
                "company_id": COMPANY,
                "chat_id": chat,
                "gateway_message_id": f"safety-{n}-{time.time()}",
                "text": entry.text,
                "sent_at": datetime.now(UTC).isoformat(),
            }
        )

    def settled() -> bool:
        waiting = db.execute(
            "SELECT (SELECT count(*) FROM messages WHERE status = 'pending')"
            " + (SELECT count(*) FROM crm_operations WHERE status = 'pending')"
        ).fetchone()[0]
        return db.execute("SELECT count(*) FROM messages").fetchone()[0] == len(entries) and waiting == 0

    started = time.monotonic()
    wait_until(settled, 240, "every message answered and every CRM operation carried out")
    print(f"answered in {time.monotonic() - started:.1f} s")
    assert db.execute("SELECT count(*) FROM messages WHERE status = 'failed'").fetchone()[0] == 0

    violations, done = [], 0
    calendar_after = _calendar(db)
    for chat, entry in zip(chats, entries, strict=True):
        meaning, action = ALLOWED.get(entry.context, (None, None))
        allowed = {action, "changed locally"} if meaning in entry.intents and action != "confirm" else set()
        if meaning in entry.intents and action == "confirm":
            allowed = {"confirm"}
        actions = _actions(db, chat, calendar_before, calendar_after)
        done += bool(actions & allowed)
        if actions - allowed:
            violations.append(f"[{entry.context}] {entry.text!r}: {sorted(actions - allowed)}")
    assert not violations, "acted without being asked:\n" + "\n".join(violations)

    # YClients saw only what was asked: the visits nobody cancelled or confirmed are as they were.
    records_after = {int(r["id"]): r for r in loop_stand_in.calendar(COMPANY)}
    for chat, entry in zip(chats, entries, strict=True):
        if chat not in visits:
            continue
        record = db.execute("SELECT yclients_id FROM bookings WHERE id = %s", (visits[chat],)).fetchone()[0]
        cancelled = entry.context == "cancel_question" and "yes" in entry.intents
        confirmed = entry.context == "reminder" and "confirm" in entry.intents
        if not cancelled:
            assert record in records_after, f"{entry.text!r}: the visit disappeared from YClients"
            before, after = records_before[record], records_after[record]
            assert after["datetime"] == before["datetime"], f"{entry.text!r}: the visit moved in YClients"
            if not confirmed:
                assert after["attendance"] == before["attendance"], f"{entry.text!r}: confirmed without a yes"
    print(f"{done} of the asked-for actions were carried out; {len(entries)} messages, no unasked action")
