"""Inbound throughput and latency at increasing load: the fleet's inbound worker against a bare Celery task
doing the same writes, and against a raw Redis list push/pop loop, in one run.

    .venv/bin/python -m bench.inbound --rates 25 50 100 --seconds 10 --chats 200 --concurrency 2

Uses its own database (fleet_bench) and Redis db 14, starts its own workers and a local gateway stand-in.
At each offered rate, messages are enqueued at that pace for the given seconds; latency is enqueue to reply
received by the gateway (fleet), to commit (bare task) or to pop (raw Redis). Also reports the most fleet
connections seen in pg_stat_activity against the connection budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleet_bench")
os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ["FLEET_ENVIRONMENT"] = "test"

import psycopg
import redis

from ops.standins.gateway import gateway_stand_in
from shared.core.budget import connection_budget
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import load_settings
from tests.support.connections import ConnectionPeak
from tests.support.processes import FleetProcess, wait_until
from tests.support.seed import COMPANY, seed_salon

TABLES = "messages, outbox, dialog_contexts, clients, dead_letters"


def figures(latencies: list[float], seconds: float) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"rate": len(latencies) / seconds, "p50": cuts[49] * 1000, "p95": cuts[94] * 1000, "p99": cuts[98] * 1000}


def line(name: str, result: dict[str, float]) -> str:
    return (
        f"{name:<34} {result['rate']:>8.1f} msg/s   p50 {result['p50']:>8.1f} ms   p95 {result['p95']:>8.1f} ms"
        f"   p99 {result['p99']:>8.1f} ms"
    )


def paced(rate: float, seconds: float, chats: int, send: Any) -> float:
    """Send rate x seconds payloads at an even pace; returns the time the first was sent."""
    run = uuid.uuid4().hex[:8]
    count = int(rate * seconds)
    started = time.time()
    for n in range(count):
        target = started + n / rate
        delay = target - time.time()
        if delay > 0:
            time.sleep(delay)
        send(
            {
                "company_id": COMPANY,
                "chat_id": f"+7911{n % chats:07d}",
                "gateway_message_id": f"b-{run}-{n}",
                "text": "5",
                "sent_at": datetime.now(UTC).isoformat(),
            },
            n // chats + 1,
        )
    return started


def bench_fleet(conn: psycopg.Connection, rate: float, seconds: float, chats: int, gateway: Any) -> dict[str, float]:
    from workers.producer import enqueue_message

    conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    gateway.deliveries.clear()
    paced(rate, seconds, chats, lambda payload, _seq: enqueue_message(payload))
    count = int(rate * seconds)
    wait_until(
        lambda: (
            conn.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0] > 0
            and conn.execute("SELECT count(*) FROM messages WHERE status <> 'pending'").fetchone()[0] >= count
            and conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0] == 0
        ),
        600,
        "every message answered and delivered",
        interval=0.2,
    )
    delivered_at = {d.id: d.at for d in gateway.deliveries}
    rows = conn.execute("SELECT m.sent_at, o.idempotency_key FROM messages m JOIN outbox o ON o.id = m.outbox_id")
    pairs = [(sent.timestamp(), delivered_at[key]) for sent, key in rows.fetchall()]
    first, last = min(sent for sent, _ in pairs), max(done for _, done in pairs)
    return figures([done - sent for sent, done in pairs], last - first)


def bench_bare(conn: psycopg.Connection, rate: float, seconds: float, chats: int) -> dict[str, float]:
    from bench.bare_app import app as bare

    conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")

    def send(payload: dict, seq: int) -> None:
        bare.send_task("bench.bare.store_and_reply", kwargs={"payload": {**payload, "seq": seq}}, queue="bench_bare")

    paced(rate, seconds, chats, send)
    count = int(rate * seconds)
    wait_until(
        lambda: conn.execute("SELECT count(*) FROM outbox").fetchone()[0] >= count, 600, "bare tasks", interval=0.2
    )
    rows = conn.execute("SELECT m.sent_at, o.created_at FROM messages m JOIN outbox o ON o.id = m.outbox_id")
    pairs = [(sent.timestamp(), done.timestamp()) for sent, done in rows.fetchall()]
    first, last = min(sent for sent, _ in pairs), max(done for _, done in pairs)
    return figures([done - sent for sent, done in pairs], last - first)


def bench_raw_redis(rate: float, seconds: float) -> dict[str, float]:
    """LPUSH at the same pace, one BRPOP consumer: the broker's own floor."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    key = f"bench:raw:{uuid.uuid4().hex[:6]}"
    count = int(rate * seconds)
    latencies: list[float] = []

    def consume() -> None:
        reader = redis.Redis.from_url(os.environ["REDIS_URL"])
        while len(latencies) < count:
            _, value = reader.brpop([key])
            latencies.append(time.time() - float(value))

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    started = paced(rate, seconds, 1, lambda _payload, _seq: client.lpush(key, repr(time.time())))
    consumer.join(60)
    return figures(latencies, time.time() - started)


def run_benchmark(rates: list[float], seconds: float, chats: int, concurrency: int) -> dict[str, Any]:
    upgrade(os.environ["DATABASE_URL"])
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    tmp = ROOT / ".run" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"rates": {}, "concurrency": concurrency}
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE companies RESTART IDENTITY CASCADE")
        open_process_pool(role="bench", max_size=2, wait=True)
        seed_salon()
        close_process_pool()
        peak = ConnectionPeak(os.environ["DATABASE_URL"], own_role="bench")
        peak.start()
        with gateway_stand_in() as gateway:
            env = {
                **os.environ,
                "FLEET_GATEWAY__SEND_URL": gateway.url,
                "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0",
                "PYTHONUNBUFFERED": "1",
            }
            fleet = FleetProcess(
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
            log = (tmp / "bare-worker.log").open("wb")
            bare = subprocess.Popen(
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
                time.sleep(5)
                for rate in rates:
                    row = {
                        "fleet": bench_fleet(conn, rate, seconds, chats, gateway),
                        "bare": bench_bare(conn, rate, seconds, chats),
                        "redis": bench_raw_redis(rate, seconds),
                    }
                    results["rates"][rate] = row
                    print(f"offered {rate:g} msg/s for {seconds:g} s over {chats} chats:")
                    print("  " + line("fleet inbound (to gateway)", row["fleet"]))
                    print("  " + line("bare Celery task (to commit)", row["bare"]))
                    print("  " + line("raw Redis LPUSH/BRPOP (to pop)", row["redis"]))
                    print(
                        f"  ratios: fleet/bare throughput {row['fleet']['rate'] / row['bare']['rate']:.2f},"
                        f" p50 {row['fleet']['p50'] / row['bare']['p50']:.1f}x;"
                        f" fleet/raw Redis throughput {row['fleet']['rate'] / row['redis']['rate']:.2f}",
                        flush=True,
                    )
            finally:
                fleet.stop()
                bare.terminate()
                bare.wait(20)
                log.close()
                peak.stop.set()
    budget = connection_budget(load_settings())
    results["peak_connections"] = peak.peak
    results["budget"] = budget.total
    print(
        f"most fleet connections seen: {peak.peak} (this bench runs one worker type of the fleet's budget of"
        f" {budget.total}; its share is {concurrency} x {budget.lines[0].per_process})"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[25, 50, 100])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    run_benchmark(args.rates, args.seconds, args.chats, args.concurrency)


if __name__ == "__main__":
    main()
