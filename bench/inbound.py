"""Inbound throughput and latency: the fleet's inbound worker against a bare Celery task, in one run.

    .venv/bin/python -m bench.inbound --messages 2000 --chats 200 --concurrency 2

Uses its own database (fleet_bench) and Redis db 14, starts its own workers and a local gateway stand-in,
and prints messages/s and p50/p95/p99 enqueue-to-reply latency for both, with the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleet_bench")
os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ["FLEET_ENVIRONMENT"] = "test"

import psycopg  # noqa: E402
import redis  # noqa: E402

from ops.standins.gateway import gateway_stand_in  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.pool import close_process_pool, open_process_pool  # noqa: E402
from tests.support.processes import FleetProcess, wait_until  # noqa: E402
from tests.support.seed import COMPANY, seed_salon  # noqa: E402

TABLES = "messages, outbox, dialog_contexts, clients, dead_letters"


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def summary(name: str, latencies: list[float], seconds: float) -> dict[str, float]:
    result = {
        "rate": len(latencies) / seconds,
        "p50": percentile(latencies, 50) * 1000,
        "p95": percentile(latencies, 95) * 1000,
        "p99": percentile(latencies, 99) * 1000,
    }
    print(
        f"{name:<28} {result['rate']:>9.1f} msg/s   p50 {result['p50']:>8.1f} ms   p95 {result['p95']:>8.1f} ms"
        f"   p99 {result['p99']:>8.1f} ms"
    )
    return result


def payloads(count: int, chats: int) -> list[dict]:
    run = uuid.uuid4().hex[:8]
    items = []
    for n in range(count):
        chat = f"+7911{n % chats:07d}"
        items.append(
            {
                "company_id": COMPANY,
                "chat_id": chat,
                "gateway_message_id": f"bench-{run}-{n}",
                "text": "5",
                "sent_at": datetime.now(UTC).isoformat(),
                "seq": n // chats + 1,
            }
        )
    return items


def reset(conn: psycopg.Connection) -> None:
    conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


def bench_fleet(conn: psycopg.Connection, count: int, chats: int, concurrency: int, tmp: Path) -> dict:
    from workers.producer import enqueue_message

    with gateway_stand_in() as gateway:
        env = {
            **os.environ,
            "FLEET_GATEWAY__SEND_URL": gateway.url,
            "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        worker = FleetProcess(
            [
                "worker",
                "inbound",
                "--concurrency",
                str(concurrency),
                "--name",
                "bench@inbound",
                "--loglevel",
                "WARNING",
            ],
            env,
            tmp / "fleet-worker.log",
        )
        try:
            time.sleep(4)
            items = payloads(count, chats)
            started = time.time()
            for item in items:
                item["sent_at"] = datetime.now(UTC).isoformat()
                enqueue_message({k: v for k, v in item.items() if k != "seq"})
            wait_until(
                lambda: (
                    conn.execute("SELECT count(*) FROM messages WHERE status <> 'pending'").fetchone()[0] >= count
                    and conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0] == 0
                ),
                600,
                "every message answered and delivered",
                interval=0.2,
            )
            delivered_at = {d.id: d.at for d in gateway.deliveries}
            rows = conn.execute(
                "SELECT m.sent_at, o.idempotency_key FROM messages m JOIN outbox o ON o.id = m.outbox_id"
            ).fetchall()
            latencies = [delivered_at[key] - sent.timestamp() for sent, key in rows]
            elapsed = max(delivered_at.values()) - started
        finally:
            worker.stop()
    return summary("fleet inbound (to gateway)", latencies, elapsed)


def bench_bare(conn: psycopg.Connection, count: int, chats: int, concurrency: int, tmp: Path) -> dict:
    from bench.bare_app import app as bare

    log = (tmp / "bare-worker.log").open("wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.bare_app",
            "worker",
            "-Q",
            "bench_bare",
            "-c",
            str(concurrency),
            "-n",
            "bench@bare",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log,
        stderr=log,
    )
    try:
        time.sleep(4)
        items = payloads(count, chats)
        started = time.time()
        for item in items:
            item["sent_at"] = datetime.now(UTC).isoformat()
            bare.send_task("bench.bare.store_and_reply", kwargs={"payload": item}, queue="bench_bare")
        wait_until(
            lambda: conn.execute("SELECT count(*) FROM outbox").fetchone()[0] >= count,
            600,
            "every bare task done",
            interval=0.2,
        )
        rows = conn.execute(
            "SELECT m.sent_at, o.created_at FROM messages m JOIN outbox o ON o.id = m.outbox_id"
        ).fetchall()
        latencies = [(done - sent).total_seconds() for sent, done in rows]
        elapsed = max(done for _, done in rows).timestamp() - started
    finally:
        worker.terminate()
        worker.wait(20)
        log.close()
    return summary("bare Celery task (to commit)", latencies, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    upgrade(os.environ["DATABASE_URL"])
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    tmp = ROOT / ".run" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE companies RESTART IDENTITY CASCADE")
        open_process_pool(role="bench", max_size=2, wait=True)
        seed_salon()
        close_process_pool()
        print(
            f"{args.messages} messages over {args.chats} chats, {args.concurrency} worker processes each,"
            " burst window 0 s"
        )
        reset(conn)
        fleet = bench_fleet(conn, args.messages, args.chats, args.concurrency, tmp)
        reset(conn)
        bare = bench_bare(conn, args.messages, args.chats, args.concurrency, tmp)
    print(
        f"ratio fleet/bare: throughput {fleet['rate'] / bare['rate']:.2f}x, p50 latency "
        f"{fleet['p50'] / bare['p50']:.1f}x, p99 latency {fleet['p99'] / bare['p99']:.1f}x"
    )


if __name__ == "__main__":
    main()
