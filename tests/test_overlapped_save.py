"""A large sync page is checked a chunk at a time while PostgreSQL merges the chunk before it. What it stores,
skips, rejects and counts must be exactly what the same page saved in one piece gives: a key given twice
across chunks still ends as the page's last valid row, a row the database refuses still spoils the whole
batch, and a caller's own transaction still holds the page."""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
import pytest

from shared.core.db import overlapped, run, transaction
from shared.core.pool import close_process_pool, open_process_pool
from shared.data.errors import ForeignKeyError
from shared.data.repositories.people import ClientRepository
from shared.observability.query_metrics import query_metrics
from shared.yclients.saving import OVERLAP_CHUNK, RunCounters, save
from tests.support.seed import COMPANY

CONFLICT = ("company_id", "yclients_id")
STORED = ("yclients_id", "name", "phone", "email", "discount", "visits_count", "sync_hash")
ABSENT_COMPANY = 987_654  # no such salon: the model accepts the row, the database's foreign key refuses it


def _client(n: int, version: int = 0) -> dict[str, Any]:
    return {
        "company_id": COMPANY,
        "yclients_id": n,
        "name": f"Клиент {n}" + (f" ({version})" if version else ""),
        "phone": f"+7911{n:07d}",
        "email": None,
        "visits_count": n % 30,
    }


def _page(rng: random.Random, stored: int, new: int, *, spoiled: int | None = None) -> list[dict[str, Any]]:
    """Stored rows sent again (most unchanged, some changed, some invalid), new rows, and keys given twice at
    distant places: once changed then as stored (the stored version must win), once the other way round."""
    page = []
    for n in range(1, stored + 1):
        roll = rng.random()
        if roll < 0.6:
            page.append(_client(n))
        elif roll < 0.9:
            page.append(_client(n, version=1))
        else:
            page.append(_client(n) | rng.choice([{"phone": "12"}, {"email": "not-an-email"}, {"visits_count": -1}]))
    page += [_client(n, version=2) for n in range(stored + 1, stored + new + 1)]
    twice = rng.sample(range(1, stored + 1), 20)
    for n in twice[:10]:
        page.insert(rng.randrange(len(page) // 4), _client(n, version=3))  # early: changed
        page.append(_client(n))  # late: as stored
    for n in twice[10:]:
        page.insert(rng.randrange(len(page) // 4), _client(n))  # early: as stored
        page.append(_client(n, version=4))  # late: changed
    if spoiled is not None:
        page.insert(spoiled, _client(stored + new + 1) | {"company_id": ABSENT_COMPANY})
    return page


def _stored(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute(f"SELECT {', '.join(STORED)} FROM clients ORDER BY yclients_id").fetchall()


def _merges() -> int:
    return query_metrics().snapshot()["by_type"].get("upsert", {}).get("count", 0)


def _saved(db: psycopg.Connection, page: list[dict[str, Any]], chunk_rows: int, stored: int) -> dict[str, Any]:
    """The page saved over `stored` clients the sync wrote before: what the table holds and what was counted."""
    db.execute("TRUNCATE clients CASCADE")
    save(ClientRepository(), [_client(n) for n in range(1, stored + 1)], RunCounters(), conflict=CONFLICT)
    counters = RunCounters()
    merges = _merges()
    save(ClientRepository(), page, counters, conflict=CONFLICT, chunk_rows=chunk_rows)
    return {
        "rows": _stored(db),
        "counted": (counters.upserted, counters.unchanged, counters.rejected),
        "rejections": counters.rejections,
        "merges": _merges() - merges,
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_a_page_saved_in_overlapped_chunks_stores_and_counts_what_one_piece_does(
    salon: psycopg.Connection, seed: int
) -> None:
    page = _page(random.Random(seed), stored=900, new=500)
    whole = _saved(salon, page, chunk_rows=len(page), stored=900)
    chunked = _saved(salon, page, chunk_rows=200, stored=900)
    assert chunked["rows"] == whole["rows"]
    assert chunked["counted"] == whole["counted"]
    assert chunked["rejections"] == whole["rejections"]
    assert whole["merges"] == 1
    assert chunked["merges"] > 5  # the chunks were merged one by one
    upserted, unchanged, rejected = chunked["counted"]
    assert unchanged > 400
    assert upserted > 700
    assert rejected > 50
    by_id = {row[0]: row for row in chunked["rows"]}
    for last in page[-20:]:  # a key given twice: its last row is what the table holds, changed or as stored
        assert by_id[last["yclients_id"]][1] == last["name"]
    assert all(row[-1] is not None for row in chunked["rows"])  # every row written kept its hash


def test_a_page_the_database_refuses_in_a_later_chunk_is_saved_row_by_row_like_one_piece(
    salon: psycopg.Connection,
) -> None:
    page = _page(random.Random(3), stored=150, new=100, spoiled=230)
    whole = _saved(salon, page, chunk_rows=len(page), stored=150)
    chunked = _saved(salon, page, chunk_rows=50, stored=150)
    assert chunked["rows"] == whole["rows"]
    assert chunked["counted"] == whole["counted"]
    assert chunked["rejections"] == whole["rejections"]
    assert [r["reason"] for r in chunked["rejections"] if r["row"] == -1] == [
        "refers to a row that is not synced (clients_company_id_fkey)"
    ]
    assert 251 not in {row[0] for row in chunked["rows"]}


def test_a_page_of_the_default_chunk_size_is_written_whole(salon: psycopg.Connection) -> None:
    rows = [_client(n) for n in range(1, OVERLAP_CHUNK * 2 + 2)]
    counters = RunCounters()
    merges = _merges()
    save(ClientRepository(), rows, counters, conflict=CONFLICT)
    assert (counters.upserted, counters.unchanged, counters.rejected) == (len(rows), 0, 0)
    assert _merges() - merges >= 3
    assert salon.execute("SELECT count(*), count(sync_hash) FROM clients").fetchone() == (len(rows), len(rows))
    again = RunCounters()
    save(ClientRepository(), rows, again, conflict=CONFLICT)
    assert (again.upserted, again.unchanged) == (0, len(rows))


def test_inside_a_callers_transaction_a_large_page_stays_in_it(salon: psycopg.Connection) -> None:
    rows = [_client(n) for n in range(1, 1001)]

    def save_then_give_up() -> None:
        with transaction():
            save(ClientRepository(), rows, RunCounters(), conflict=CONFLICT, chunk_rows=100)
            raise RuntimeError("the caller gives up")

    with pytest.raises(RuntimeError):
        save_then_give_up()
    assert salon.execute("SELECT count(*) FROM clients").fetchone() == (0,)


def test_inside_a_callers_transaction_a_large_page_sees_what_the_transaction_changed(
    salon: psycopg.Connection,
) -> None:
    """The page's checks must read in the caller's transaction: a row it changed is not what the sync wrote."""
    rows = [_client(n) for n in range(1, 1001)]
    save(ClientRepository(), rows, RunCounters(), conflict=CONFLICT)
    counters = RunCounters()
    with transaction():
        run("UPDATE clients SET name = 'changed here' WHERE yclients_id = 500", table="clients", operation="update")
        save(ClientRepository(), rows, counters, conflict=CONFLICT, chunk_rows=100)
    assert (counters.upserted, counters.unchanged) == (1, 999)
    assert salon.execute("SELECT name FROM clients WHERE yclients_id = 500").fetchone() == ("Клиент 500",)


def test_a_pool_of_one_connection_saves_a_large_page_in_one_piece(salon: psycopg.Connection) -> None:
    close_process_pool()
    open_process_pool(role="test", max_size=1, wait=True)
    counters = RunCounters()
    save(ClientRepository(), [_client(n) for n in range(1, 1001)], counters, conflict=CONFLICT, chunk_rows=100)
    assert counters.upserted == 1000
    assert salon.execute("SELECT count(*) FROM clients").fetchone() == (1000,)


def _wait_until_running(db: psycopg.Connection, pid: int) -> str:
    """The server's view of the other connection, once it is running its statement (polled, not timed)."""
    for _ in range(200):
        state, query = db.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if state == "active" and "pg_sleep" in query:
            return state
        time.sleep(0.01)
    return state


def test_a_block_overlapped_with_a_statement_runs_while_the_server_runs_it(salon: psycopg.Connection) -> None:
    seen: list[str] = []
    with transaction() as tx:
        pid = tx.pgconn.backend_pid
        with overlapped(
            "SELECT 7 AS n FROM pg_sleep(0.3)", table=None, operation="select", conn=tx, dict_rows=True
        ) as cur:
            seen.append(_wait_until_running(salon, pid))
        rows = cur.fetchall()
        update = f"UPDATE companies SET title = title WHERE id = {COMPANY} AND (SELECT true FROM pg_sleep(0.3))"
        with overlapped(update, table="companies", operation="update", conn=tx) as result:
            seen.append(_wait_until_running(salon, pid))
    assert rows == [{"n": 7}]
    assert result.rowcount == 1
    assert seen == ["active", "active"]


def test_a_failure_of_an_overlapped_statement_is_raised_typed_after_the_block(salon: psycopg.Connection) -> None:
    done: list[bool] = []

    def insert_a_client_of_no_salon() -> None:
        with transaction() as tx:
            insert = f"INSERT INTO clients (company_id, yclients_id) VALUES ({ABSENT_COMPANY}, 1)"
            with overlapped(insert, table="clients", operation="insert", conn=tx):
                done.append(True)

    with pytest.raises(ForeignKeyError):
        insert_a_client_of_no_salon()
    assert done == [True]
    assert salon.execute("SELECT count(*) FROM clients").fetchone() == (0,)
