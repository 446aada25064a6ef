"""Backup cost: our verified backup against bare pg_dump, and its size against pg_dump | zstd -1, in one run.

    .venv/bin/python -m bench.backup --megabytes 300

Fills the fleet_bench database (once) with realistic, not highly compressible data: clients with names,
phones and e-mails, chat messages in Russian, and WhatsApp keys holding random key material. Then times:
  ours:             take_backup (row counts in the dump's snapshot while pg_dump -Fc -Z0 | zstd writes it,
                    checksum taken while writing, pg_restore --list verification, manifest, globals)
  pg_dump -Fp:      plain dump to /dev/null (the dump's floor)
  pg_dump -Fc:      custom format with its default compression (for reference)
and compares our archive's size with `pg_dump -Fp | zstd -1`. Each is run `--repeat` times, interleaved, and
its median counts: run once each, ours went first, on a cache still cold from the fill, and a single run of any
of them moved by a third on a busy 2-core VM. Needs zstd on PATH (Debian: zstd).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleet_bench")
os.environ["FLEET_ENVIRONMENT"] = "test"

import psycopg

from bench import goals
from shared.backups.engine import take_backup
from shared.backups.tools import PgTools
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import BackupSettings

WORDS = [
    "здравствуйте",
    "хочу",
    "записаться",
    "на",
    "стрижку",
    "завтра",
    "вечером",
    "можно",
    "ли",
    "перенести",
    "маникюр",
    "сколько",
    "стоит",
    "окрашивание",
    "спасибо",
    "большое",
    "мастер",
    "свободное",
    "время",
    "суббота",
    "утром",
    "пожалуйста",
    "подскажите",
    "адрес",
]


def database_bytes(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def fill(conn: psycopg.Connection, megabytes: int) -> None:
    """Start from empty tables (other benchmarks leave dead rows behind), then add data until the size is met."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
    ]
    conn.execute("TRUNCATE " + ", ".join(f'"{table}"' for table in tables) + " RESTART IDENTITY CASCADE")
    conn.execute("INSERT INTO companies (id, title) VALUES (7, 'bench') ON CONFLICT DO NOTHING")
    step = 0
    while database_bytes(conn) < megabytes * 1024 * 1024:
        step += 1
        conn.execute(
            "INSERT INTO clients (company_id, yclients_id, name, phone, email, visits_count)"
            " SELECT 7, %s * 100000 + n,"
            " initcap(md5(random()::text)) || ' ' || initcap(substr(md5(random()::text), 1, 9)),"
            " '+7911' || lpad((random() * 9999999)::int::text, 7, '0'),"
            " substr(md5(random()::text), 1, 12) || '@mail.ru',"
            " (random() * 40)::int FROM generate_series(1, 50000) n",
            (step,),
        )
        conn.execute(
            "INSERT INTO messages (company_id, chat_id, gateway_message_id, chat_seq, body, sent_at, status)"
            " SELECT 7, '+7911' || lpad((n %% 5000)::text, 7, '0'), 'bench-' || %s || '-' || n, %s * 100000 + n,"
            " (SELECT string_agg(w, ' ') FROM (SELECT (%s::text[])[1 + (random() * (%s - 1))::int] AS w"
            "  FROM generate_series(1, 5 + (n %% 25))) words), now() - random() * interval '300 days', 'answered'"
            " FROM generate_series(1, 50000) n",
            (step, step, WORDS, len(WORDS)),
        )
        conn.execute(
            "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value)"
            " SELECT 'company_7', 'session', %s || '.' || n, jsonb_build_object('key',"
            " encode(sha256(random()::text::bytea) || sha256(random()::text::bytea), 'base64'),"
            " 'chain', encode(sha512(random()::text::bytea), 'base64'))"
            " FROM generate_series(1, 50000) n",
            (step,),
        )
        print(f"  filled to {database_bytes(conn) / 1e6:,.0f} MB", flush=True)
    conn.execute("VACUUM ANALYZE")


def timed(command: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, shell=True, check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, interleaved; the medians count")
    args = parser.parse_args()
    conninfo = os.environ["DATABASE_URL"]
    upgrade(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        fill(conn, args.megabytes)
        size = database_bytes(conn)
    open_process_pool(role="bench", max_size=1, wait=True)
    runs: dict[str, list[float]] = {"ours": [], "floor": [], "default -Fc": [], "zstd": []}
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.repeat):
            settings = BackupSettings(directory=Path(scratch) / f"backups-{run}")
            env = PgTools(settings, conninfo).env()
            started = time.perf_counter()
            result = take_backup(settings, conninfo)
            runs["ours"].append(time.perf_counter() - started)
            runs["floor"].append(timed("pg_dump -Fp > /dev/null", env))
            runs["default -Fc"].append(timed(f"pg_dump -Fc -f {scratch}/default.dump", env))
            zstd_file = Path(scratch) / "plain.sql.zst"
            runs["zstd"].append(timed(f"pg_dump -Fp | zstd -1 -q -o {zstd_file} -f", env))
        default_size = (Path(scratch) / "default.dump").stat().st_size
        zstd_size = zstd_file.stat().st_size
    close_process_pool()
    ours, floor, default_fc, zstd_time = (statistics.median(found) for found in runs.values())
    for name, found in runs.items():
        print(f"  runs of {name}: {', '.join(f'{seconds:.2f}' for seconds in found)} s")
    print(
        f"database {size / 1e6:,.0f} MB; ours: pg_dump -Fc -Z0 | zstd -{settings.zstd_level};"
        f" medians of {args.repeat} interleaved runs"
    )
    print(f"ours (dump + verify)      {ours:7.2f} s   archive {result.size_bytes / 1e6:8.1f} MB")
    print(f"pg_dump -Fp > /dev/null   {floor:7.2f} s")
    print(f"pg_dump -Fc (default)     {default_fc:7.2f} s   archive {default_size / 1e6:8.1f} MB")
    print(f"pg_dump -Fp | zstd -1     {zstd_time:7.2f} s   archive {zstd_size / 1e6:8.1f} MB")
    print(
        f"ratios: ours / floor time {ours / floor:.2f}, default -Fc / floor time {default_fc / floor:.2f};"
        f" our size / zstd -1 size {result.size_bytes / zstd_size:.2f}"
    )
    print(goals.at_most("backup time / pg_dump -Fp time", ours / floor, 1.5, "x"))
    print(goals.at_most("archive size / pg_dump -Fp | zstd -1 size", result.size_bytes / zstd_size, 1.1, "x"))


if __name__ == "__main__":
    main()
