"""Work rows (shared/data/work_rows.py), driven directly against the real database for each of the four work
tables: a claim's lease, the per-key order, retries spaced by `backoff_delay`, giving up at the cap, the ids
the sweeps re-drive and the backlog the health report shows."""

from __future__ import annotations

import time
from datetime import timedelta
from itertools import count
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from shared.core.db import transaction
from shared.core.failure import backoff_delay
from shared.data.errors import UnknownIdentifierError
from shared.data.repositories.alerts import AlertRepository
from shared.data.repositories.calendar import BookingRepository
from shared.data.repositories.conversations import OutboxRepository
from shared.data.repositories.crm_operations import CrmOperationRepository
from shared.data.repositories.webhook_events import WebhookEventRepository
from shared.data.work_rows import Status, WorkRows
from tests.support.seed import COMPANY, MOSCOW_NOON, booking

LEASE = 0.3  # seconds: short, so a test can watch a lease run out
BASE, CAP = 0.3, 10.0  # the retry spacing these tests ask backoff_delay for


class Table:
    """One work table and a way to add a pending row under a key (a chat, a booking; no order for the others)."""

    def __init__(self, name: str, rows: WorkRows, ordered: bool) -> None:
        self.name, self.rows, self.ordered = name, rows, ordered
        self._serial = count(1)
        self._bookings: dict[str, int] = {}

    def add(self, key: str) -> int:
        n = next(self._serial)
        if isinstance(self.rows, OutboxRepository):
            chat = {"a": "+79110000001", "b": "+79110000002"}[key]
            values = {"company_id": COMPANY, "chat_id": chat, "idempotency_key": f"reply:{n}", "body": "Здравствуйте"}
            return self.rows.upsert(values, update=[])["id"]
        if isinstance(self.rows, CrmOperationRepository):
            if key not in self._bookings:
                start = MOSCOW_NOON + timedelta(hours=len(self._bookings))
                self._bookings[key] = BookingRepository().create(booking(start=start, source="assistant"))["id"]
            return self.rows.add(COMPANY, self._bookings[key], "reschedule", chat_id=None)
        if isinstance(self.rows, AlertRepository):
            assert self.rows.add(f"{key}:{n}", "health", f"🔴 alert {n}")
            return self.rows.get({"key": f"{key}:{n}"})["id"]
        assert isinstance(self.rows, WebhookEventRepository)
        event_id = self.rows.store(COMPANY, "record", n, "update")
        assert event_id is not None
        return event_id

    def row(self, db: psycopg.Connection, row_id: int) -> dict[str, Any]:
        query = sql.SQL(
            "SELECT status, attempts, last_error, finished_at,"
            " extract(epoch FROM next_attempt_at - now())::float8 AS due_in FROM {} WHERE id = %s"
        ).format(sql.Identifier(self.name))
        with db.cursor(row_factory=dict_row) as cursor:
            found = cursor.execute(query, (row_id,)).fetchone()
        assert found is not None
        return found

    def backdate(self, db: psycopg.Connection, column: str, row_id: int, seconds: float) -> None:
        query = sql.SQL("UPDATE {} SET {} = now() - make_interval(secs => %s) WHERE id = %s").format(
            sql.Identifier(self.name), sql.Identifier(column)
        )
        db.execute(query, (seconds, row_id))


TABLES = {
    "outbox": (OutboxRepository, True),
    "crm_operations": (CrmOperationRepository, True),
    "alerts": (AlertRepository, False),
    "yclients_webhook_events": (WebhookEventRepository, False),
}


@pytest.fixture(params=list(TABLES))
def table(request: pytest.FixtureRequest, salon: psycopg.Connection) -> Table:
    repository, ordered = TABLES[request.param]
    return Table(request.param, repository(), ordered)


def test_a_claim_counts_the_attempt_and_holds_its_lease_until_it_runs_out(
    table: Table, salon: psycopg.Connection
) -> None:
    row_id = table.add("a")
    first = table.rows.claim(row_id, LEASE)
    assert first is not None
    assert (first["id"], first["attempts"], first["status"]) == (row_id, 1, Status.PENDING)
    assert table.rows.claim(row_id, LEASE) is None, "a second claimer gets nothing while the lease holds"
    assert table.rows.claim_next(LEASE) is None, "nor does one that takes the oldest due row"
    assert table.rows.due_ids() == [], "a leased row is not due: the sweep leaves it to its worker"
    time.sleep(LEASE + 0.1)
    assert table.rows.due_ids() == [row_id], "the worker died: once the lease ran out, the sweep finds the row"
    again = table.rows.claim_next(LEASE)
    assert again is not None
    assert (again["id"], again["attempts"]) == (row_id, 2), "the lost attempt counted"


def test_claiming_the_next_row_skips_one_another_claimer_has_locked(table: Table, salon: psycopg.Connection) -> None:
    first, second = table.add("a"), table.add("b")
    with transaction() as conn:
        held = table.rows.claim_next(LEASE, conn=conn)
        assert held is not None
        assert held["id"] == first
        other = table.rows.claim_next(LEASE)  # another connection, while the first claim is not committed
        assert other is not None, "skipped, not waited for"
        assert other["id"] == second
    assert table.rows.claim_next(LEASE) is None


def test_a_row_waits_while_an_earlier_row_of_its_key_is_pending(table: Table, salon: psycopg.Connection) -> None:
    first, second, other = table.add("a"), table.add("a"), table.add("b")
    if not table.ordered:
        assert table.rows.due_ids() == [first, second, other]
        assert table.rows.claim(second, LEASE) is not None, "no order key: every row stands alone"
        return
    assert table.rows.due_ids() == [first, other], "only each key's first pending row can be claimed"
    assert table.rows.claim(second, LEASE) is None, "the key's earlier row is still pending"
    assert table.rows.claim(other, LEASE) is not None, "another key's row does not wait"
    assert table.rows.claim(first, LEASE) is not None
    assert table.rows.claim(second, LEASE) is None, "leased is still pending: the earlier row is not finished"
    assert table.rows.finish(first) == second, "finishing hands the key's next row on"
    claimed = table.rows.claim(second, LEASE)
    assert claimed is not None
    assert claimed["attempts"] == 1


def test_retry_later_waits_the_backoff_delay_then_the_row_is_due(table: Table, salon: psycopg.Connection) -> None:
    row_id = table.add("a")
    for attempt in (1, 2):
        claimed = table.rows.claim(row_id, LEASE)
        assert claimed is not None
        assert claimed["attempts"] == attempt
        delay = backoff_delay(claimed["attempts"], BASE, CAP)
        table.rows.retry_later(row_id, f"503 on attempt {attempt}", delay)
        row = table.row(salon, row_id)
        assert (row["status"], row["last_error"]) == (Status.PENDING, f"503 on attempt {attempt}")
        assert delay - 0.1 < row["due_in"] <= delay, "due again after backoff_delay of the row's own attempts"
        assert table.rows.claim(row_id, LEASE) is None, "not due yet"
        assert row_id not in table.rows.due_ids()
        time.sleep(delay + 0.05)
        assert table.rows.due_ids() == [row_id]
    assert backoff_delay(2, BASE, CAP) == 2 * backoff_delay(1, BASE, CAP), "the second wait was twice the first"


def test_a_row_is_given_up_at_its_cap_and_can_be_reopened(table: Table, salon: psycopg.Connection) -> None:
    cap = 3
    row_id, later = table.add("a"), table.add("a")
    while (claimed := table.rows.claim(row_id, LEASE)) is not None:
        if claimed["attempts"] < cap:
            table.rows.retry_later(row_id, f"error {claimed['attempts']}", 0)
        else:
            following = table.rows.give_up(row_id, f"gave up after {cap} attempts: error {cap}")
            assert following == (later if table.ordered else None), "the key's next row no longer waits"
    row = table.row(salon, row_id)
    assert (row["status"], row["attempts"]) == (Status.FAILED, cap)
    assert row["last_error"] == f"gave up after {cap} attempts: error {cap}"
    assert row["finished_at"] is not None
    assert table.rows.due_ids() == [later]
    table.rows.retry_later(row_id, "too late", 0)
    assert table.row(salon, row_id)["status"] == Status.FAILED, "a finished row stays finished"

    assert table.rows.reopen(row_id), "an operator tries it again"
    assert not table.rows.reopen(row_id), "only a failed row is reopened"
    row = table.row(salon, row_id)
    assert (row["status"], row["attempts"], row["finished_at"]) == (Status.PENDING, 0, None)
    claimed = table.rows.claim(row_id, LEASE)
    assert claimed is not None
    assert claimed["attempts"] == 1, "from its first attempt"


def test_a_finished_row_is_done_once(table: Table, salon: psycopg.Connection) -> None:
    row_id = table.add("a")
    assert table.rows.claim(row_id, LEASE) is not None
    table.rows.retry_later(row_id, "timeout", 0)
    assert table.rows.claim(row_id, LEASE) is not None
    table.rows.finish(row_id)
    row = table.row(salon, row_id)
    assert (row["status"], row["attempts"], row["last_error"]) == (Status.DONE, 2, None)
    done_at = row["finished_at"]
    assert done_at is not None
    table.rows.finish(row_id)
    table.rows.give_up(row_id, "a late failure")
    assert table.row(salon, row_id)["status"] == Status.DONE
    assert table.row(salon, row_id)["finished_at"] == done_at
    assert table.rows.claim(row_id, LEASE) is None
    assert table.rows.due_ids() == []


def test_due_ids_leave_a_row_to_its_own_task_for_the_grace_and_keep_to_the_limit(
    table: Table, salon: psycopg.Connection
) -> None:
    rows = [table.add(key) for key in ("a", "b")]
    assert table.rows.due_ids(grace_seconds=60) == [], "just written: its own task is on the way"
    for row_id in rows:
        table.backdate(salon, "next_attempt_at", row_id, 120)
    assert table.rows.due_ids(grace_seconds=60) == rows
    assert table.rows.due_ids(1) == rows[:1], "oldest first"


def test_the_backlog_counts_pending_and_failed_rows_and_the_oldest_wait(
    table: Table, salon: psycopg.Connection
) -> None:
    assert table.rows.backlog() == {"pending": 0, "failed": 0, "failed_last_day": 0, "oldest_pending_seconds": None}
    waiting, done, failed, failed_long_ago = (table.add(key) for key in ("a", "b", "b", "b"))
    table.backdate(salon, table.rows.created_column, waiting, 600)
    assert table.rows.claim(done, LEASE) is not None
    table.rows.finish(done)
    for row_id in (failed, failed_long_ago):
        assert table.rows.claim(row_id, LEASE) is not None
        table.rows.give_up(row_id, "no")
    table.backdate(salon, "finished_at", failed_long_ago, 2 * 86400)
    backlog = table.rows.backlog()
    oldest = backlog.pop("oldest_pending_seconds")
    assert backlog == {"pending": 1, "failed": 2, "failed_last_day": 1}
    assert 600 <= oldest < 610


def test_a_work_table_is_declared_with_the_columns_its_life_needs() -> None:
    with pytest.raises(TypeError, match=r"needs the columns \['finished_at', 'next_attempt_at'\]"):

        class Incomplete(WorkRows):
            table = "dead_letters"
            columns = frozenset({"id", "status", "attempts", "last_error", "created_at"})

    with pytest.raises(TypeError, match=r"needs the columns \['chat'\]"):

        class WrongKey(WorkRows):
            table = "outbox"
            columns = OutboxRepository.columns
            order_key = ("chat",)


def test_a_step_refuses_a_column_the_table_does_not_declare(salon: psycopg.Connection) -> None:
    outbox = OutboxRepository()
    with pytest.raises(UnknownIdentifierError, match="unknown column of outbox"):
        outbox.finish(1, outcome="delivered")
