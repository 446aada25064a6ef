"""The sync's write path against the best known upsert path and against COPY alone, in one run.

    .venv/bin/python -m bench.sync_upsert --existing 1000000 --incoming 100000 --updates 0.8 --repeat 3

Table: `clients` of the fleet_bench database, holding `--existing` rows of one company. Incoming rows are
`--updates` updates (a changed name) and the rest inserts. Each path starts from a fresh table, checkpointed;
each runs `--repeat` times, interleaved with the others, and its median counts (the merge alone varies by a
second between runs on a small VM).
  sync write:      what a sync does with a page (shared/yclients/saving.save): hash every row, read the stored
                   hashes of the page's keys (none match: every row is new or changed), validate the rows,
                   then COPY into a temporary table and merge; a page this large goes in chunks of 10,000
                   rows, each checked while the server merges the one before, in one transaction
  sync write, pre-validated rows: the write alone, of rows already validated and hashed (the database part)
  re-sync of unchanged rows: the same rows saved again right after the sync wrote them (untimed, checkpointed):
                   every stored hash matches, so nothing is validated or written
  bulk_upsert:     the general repository path (JSON batches of 500 rows, every row returned)
  copy+merge:      binary COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT DO UPDATE
  copy alone:      binary COPY of the same rows into an empty table (the ceiling)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from decimal import Decimal

os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleet_bench")
os.environ["FLEET_ENVIRONMENT"] = "test"

import psycopg

from bench import goals
from shared.core.db import transaction
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.data.repositories.people import ClientRepository
from shared.data.sync_hashes import COLUMN, hash_key, row_hashes
from shared.yclients.saving import RunCounters, save

COMPANY = 1
COLUMNS = ("company_id", "yclients_id", "name", "phone", "email", "discount", "visits_count")
MERGE_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[2:])
MERGE_CHANGED = (
    f"({', '.join('t.' + c for c in COLUMNS[2:])}) IS DISTINCT FROM ({', '.join('EXCLUDED.' + c for c in COLUMNS[2:])})"
)


def prepare(conn: psycopg.Connection, existing: int) -> None:
    conn.execute("INSERT INTO companies (id, title) VALUES (%s, 'bench') ON CONFLICT DO NOTHING", (COMPANY,))
    conn.execute("TRUNCATE clients CASCADE")  # a fresh table each path: no bloat from earlier runs or benchmarks
    conn.execute(
        "INSERT INTO clients (company_id, yclients_id, name, phone, visits_count)"
        " SELECT %s, n, 'Клиент ' || n, '+7911' || lpad(n::text, 7, '0'), n %% 30 FROM generate_series(1, %s) n",
        (COMPANY, existing),
    )
    conn.execute("VACUUM ANALYZE clients")
    conn.execute("CHECKPOINT")  # the fill's WAL is flushed now, not during the timed path


def incoming(existing: int, count: int, updates: float) -> list[dict]:
    n_updates = int(count * updates)
    ids = list(range(1, n_updates + 1)) + list(range(existing + 1, existing + 1 + count - n_updates))
    return [
        {
            "company_id": COMPANY,
            "yclients_id": i,
            "name": f"Клиент {i} (изм.)",
            "phone": f"+7911{i % 10**7:07d}",
            "email": None,
            "discount": Decimal(0),
            "visits_count": i % 30,
        }
        for i in ids
    ]


def sync_write(conn: psycopg.Connection, rows: list[dict]) -> None:
    counters = RunCounters()
    save(ClientRepository(), rows, counters, conflict=("company_id", "yclients_id"))
    assert counters.rejected == 0, counters
    assert counters.upserted == len(rows), counters


def resync_unchanged(conn: psycopg.Connection, rows: list[dict]) -> None:
    counters = RunCounters()
    save(ClientRepository(), rows, counters, conflict=("company_id", "yclients_id"))
    assert counters.unchanged == len(rows), counters
    assert counters.upserted == 0, counters


def synced_before(conn: psycopg.Connection, rows: list[dict]) -> None:
    """The re-sync's starting point: the rows as the sync just wrote them, flushed."""
    sync_write(conn, rows)
    conn.execute("CHECKPOINT")


def prevalidated(rows: list[dict]) -> list[dict]:
    """The rows as `save` hands them to copy_upsert: validated, each with its hash."""
    repo = ClientRepository()
    valid, rejected = repo.validate_many(rows)
    assert not rejected
    for row, digest in zip(valid, row_hashes(rows, hash_key(repo.table, repo.model)), strict=True):
        row[COLUMN] = digest
    return valid


def sync_write_prevalidated(conn: psycopg.Connection, rows: list[dict]) -> None:
    with transaction():
        ClientRepository().copy_upsert(rows, conflict=("company_id", "yclients_id"), validated=True)


def bulk_upsert(conn: psycopg.Connection, rows: list[dict]) -> None:
    with transaction():
        ClientRepository().bulk_upsert(rows, conflict=("company_id", "yclients_id"))


def _copy_into_temp(conn: psycopg.Connection, table: str, rows: list[dict]) -> None:
    """Binary COPY of the rows into a temporary copy of `clients`, dropped at commit."""
    conn.execute(f"CREATE TEMP TABLE {table} (LIKE clients INCLUDING DEFAULTS) ON COMMIT DROP")
    with conn.cursor().copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["bigint", "bigint", "text", "text", "text", "numeric", "integer"])
        for row in rows:
            copy.write_row([row[c] for c in COLUMNS])


def copy_and_merge(conn: psycopg.Connection, rows: list[dict]) -> None:
    with conn.transaction():
        _copy_into_temp(conn, "incoming", rows)
        conn.execute(
            f"INSERT INTO clients AS t ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM incoming"
            f" ON CONFLICT (company_id, yclients_id) DO UPDATE SET {MERGE_SET} WHERE {MERGE_CHANGED}"
        )


def copy_alone(conn: psycopg.Connection, rows: list[dict]) -> None:
    with conn.transaction():
        _copy_into_temp(conn, "ceiling", rows)


def timed(
    conn: psycopg.Connection, existing: int, rows: list[dict], path: Callable, setup: Callable | None = None
) -> float:
    prepare(conn, existing)
    if setup is not None:
        setup(conn, rows)
    started = time.perf_counter()
    path(conn, rows)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--existing", type=int, default=1_000_000)
    parser.add_argument("--incoming", type=int, default=100_000)
    parser.add_argument("--updates", type=float, default=0.8)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path; the median counts")
    args = parser.parse_args()
    upgrade(os.environ["DATABASE_URL"])
    rows = incoming(args.existing, args.incoming, args.updates)
    open_process_pool(role="bench", wait=True)  # sized as a worker's pool (FLEET_POOL__MAX_SIZE)
    results = {}
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as admin:
        ready = prevalidated(rows)
        paths = (
            ("copy alone", copy_alone, rows, None),
            ("copy+merge", copy_and_merge, rows, None),
            ("sync write", sync_write, rows, None),
            ("sync write, pre-validated", sync_write_prevalidated, ready, None),
            ("re-sync of unchanged rows", resync_unchanged, rows, synced_before),
            ("bulk_upsert", bulk_upsert, rows, None),
        )
        runs: dict[str, list[float]] = {name: [] for name, *_ in paths}
        for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits every path alike
            for name, path, given, setup in paths:
                runs[name].append(timed(admin, args.existing, given, path, setup))
        for name, *_ in paths:
            seconds = statistics.median(runs[name])
            results[name] = len(rows) / seconds
            spread = ", ".join(f"{run:.2f}" for run in runs[name])
            print(f"{name:<26} {seconds:7.2f} s  {results[name]:>10,.0f} rows/s   (runs: {spread} s)")
    close_process_pool()
    merge, ceiling = results["copy+merge"], results["copy alone"]
    print(f"{args.existing:,} existing rows, {args.incoming:,} incoming ({args.updates:.0%} updates); ratios:")
    for name in ("sync write", "sync write, pre-validated", "bulk_upsert"):
        print(f"  {name:<26} / copy+merge {results[name] / merge:.2f}   / copy alone {results[name] / ceiling:.2f}")
    print(f"  {'copy+merge':<26} / copy alone {merge / ceiling:.2f}")
    print(goals.at_least("sync write incl. validation / copy+merge", results["sync write"] / merge, 0.9, "x"))
    resync = results["sync write"] / results["re-sync of unchanged rows"]  # its time over the full write's
    print(goals.at_most("re-sync of unchanged rows / full sync write", resync, 0.2, "x"))


if __name__ == "__main__":
    main()
