"""Inbound throughput and latency: the fleet's inbound worker against a bare Celery task doing the same work
(bench/bare_app.py: the same statements and the same gateway POST in one task, without the fleet's layers).

    .venv/bin/python -m bench.inbound --burst 2000 --seconds 10 --chats 200 --concurrency 2

Uses its own database (fleet_bench) and Redis db 14, starts its own workers (burst window 0) and a local
gateway stand-in. For each of the two:
  saturation: `--burst` messages enqueued at once; answered messages per second from the first enqueue to
              the last reply received by the gateway (the workers are busy throughout); `--repeat` passes of
              each worker, interleaved, and the medians count (rate, and each count below): the kernel's CPU
              milliseconds a message moved by 15-25% between single passes on this 2-core VM;
  latency:    messages offered at half the fleet's saturation rate for `--seconds`, enqueue to reply received
              by the gateway: p50, p95, p99; and where the slowest 1% spent their time (to stored, stored to
              answered, answered to delivered) against every message.
What each answered message cost at saturation, counted rather than timed (bench/counts.py): PostgreSQL
transactions, Redis commands (the busiest by name), and CPU milliseconds of the worker's main process, its
children, PostgreSQL and Redis. Round trips to PostgreSQL are counted on the wire (bench/round_trips.py) in a
separate, untimed pass of `--trips` messages, each worker started again with its database behind the relay.
A raw Redis LPUSH/BRPOP loop at the same pace gives the broker's own floor.
Also reports the most fleet connections seen in pg_stat_activity against the connection budget. Goals are
printed beside the figures.
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
from bench.services import use_bench_services

use_bench_services()
os.environ["FLEET_ENVIRONMENT"] = "test"

import psycopg
import redis

from bench import goals
from bench.counts import Counts
from bench.round_trips import RoundTripRelay
from ops.harness.connections import ConnectionPeak
from ops.harness.processes import FleetProcess, wait_until
from ops.harness.seed import COMPANY, seed_salon
from ops.standins.gateway import gateway_stand_in
from shared.core.budget import connection_budget
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import load_settings
from shared.inbound.gateway import gateway_id

TABLES = "messages, outbox, dialog_contexts, clients, dead_letters"
STATS_FLUSH_SECONDS = 1.5


def figures(latencies: list[float], seconds: float) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"rate": len(latencies) / seconds, "p50": cuts[49] * 1000, "p95": cuts[94] * 1000, "p99": cuts[98] * 1000}


def line(name: str, result: dict[str, float]) -> str:
    return (
        f"{name:<34} {result['rate']:>8.1f} msg/s   p50 {result['p50']:>8.1f} ms   p95 {result['p95']:>8.1f} ms"
        f"   p99 {result['p99']:>8.1f} ms"
    )


def offer(count: int, chats: int, send: Any, rate: float | None = None) -> float:
    """Send `count` payloads over `chats` chats, at `rate` a second or, without one, as fast as the producer
    can; returns the time the first was sent."""
    run = uuid.uuid4().hex[:8]
    started = time.time()
    for n in range(count):
        delay = started + n / rate - time.time() if rate else 0.0
        if delay > 0:
            time.sleep(delay)
        send(
            {
                "company_id": COMPANY,
                "chat_id": f"+7911{n % chats:07d}",
                "gateway_message_id": f"b-{run}-{n}",
                "text": "5",
                "sent_at": datetime.now(UTC).isoformat(),
            }
        )
    return started


def delivered(conn: psycopg.Connection, gateway: Any, count: int) -> list[tuple[float, float]]:
    """(enqueued, reply received by the gateway) of every message, once all `count` are answered and sent."""
    wait_until(
        lambda: (
            conn.execute("SELECT count(*) FROM messages WHERE status <> 'pending'").fetchone()[0] >= count
            and conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0] == 0
            and gateway.count() >= count
        ),
        900,
        "every message answered and delivered",
        interval=0.2,
    )
    at = {d.id: d.at for d in gateway.deliveries}
    rows = conn.execute(
        "SELECT m.sent_at, o.company_id, o.idempotency_key FROM messages m JOIN outbox o ON o.id = m.outbox_id"
    )
    return [(sent.timestamp(), at[gateway_id(company, key)]) for sent, company, key in rows.fetchall()]


def fleet_sender() -> Any:
    from workers.producer import enqueue_message

    return enqueue_message


def bare_sender() -> Any:
    from bench.bare_app import app as bare

    def send(payload: dict) -> None:
        bare.send_task("bench.bare.store_and_reply", kwargs={"payload": payload}, queue="bench_bare")

    return send


def saturation(
    conn: psycopg.Connection, gateway: Any, send: Any, count: int, chats: int, main_pid: int
) -> tuple[float, dict[str, Any]]:
    """Answered messages a second, and what each cost by the servers' and the kernel's counts."""
    conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    gateway.clear()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    time.sleep(STATS_FLUSH_SECONDS)
    before = Counts.take(conn, client, main_pid)
    started = offer(count, chats, send)
    pairs = delivered(conn, gateway, count)
    rate = len(pairs) / (max(done for _, done in pairs) - started)
    time.sleep(STATS_FLUSH_SECONDS)  # PostgreSQL publishes a backend's counts within a second of its commit
    after = Counts.take(conn, client, main_pid)
    cost: dict[str, Any] = after.per_message(before, len(pairs))
    cost["busiest_commands"] = after.busiest_commands(before, len(pairs))
    return rate, cost


def cost_line(name: str, cost: dict[str, Any]) -> str:
    total = cost["main_cpu_ms"] + cost["children_cpu_ms"]
    return (
        f"  {name:<5} per message: {cost['transactions']:.2f} transactions, {cost['redis_commands']:.1f} Redis"
        f" commands; CPU ms: worker main {cost['main_cpu_ms']:.2f} (event loop {cost['main_thread_cpu_ms']:.2f}),"
        f" children {cost['children_cpu_ms']:.2f}"
        f" (worker {total:.2f}), PostgreSQL {cost['postgres_cpu_ms']:.2f}, Redis {cost['redis_cpu_ms']:.2f}"
        f"\n        Redis commands: {', '.join(f'{n} {c:.1f}' for n, c in cost['busiest_commands'])}"
    )


def latency(
    conn: psycopg.Connection, gateway: Any, send: Any, rate: float, seconds: float, chats: int
) -> dict[str, float]:
    conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    gateway.clear()
    offer(int(rate * seconds), chats, send, rate)
    pairs = delivered(conn, gateway, int(rate * seconds))
    first, last = min(sent for sent, _ in pairs), max(done for _, done in pairs)
    result: dict[str, Any] = figures([done - sent for sent, done in pairs], last - first)
    result["tail"] = tail(conn, gateway)
    return result


SEGMENTS = ("to stored", "stored to answered", "answered to delivered")


def tail(conn: psycopg.Connection, gateway: Any) -> dict[str, tuple[float, float]]:
    """Where the slowest 1% of messages spent their time, against every message: the median milliseconds of each
    segment, (all, slowest 1%). To stored: enqueue, broker, router and the worker's wait; stored to answered: the
    answering transaction's start (the chat's lock, the assistant); answered to delivered: commit and gateway."""
    at = {d.id: d.at for d in gateway.deliveries}
    rows = conn.execute(
        "SELECT m.sent_at, m.received_at, m.answered_at, o.company_id, o.idempotency_key"
        " FROM messages m JOIN outbox o ON o.id = m.outbox_id"
    ).fetchall()
    spans = [
        (
            stored.timestamp() - sent.timestamp(),
            answered.timestamp() - stored.timestamp(),
            at[gateway_id(company, key)] - answered.timestamp(),
        )
        for sent, stored, answered, company, key in rows
    ]
    slowest = sorted(spans, key=sum)[-max(1, len(spans) // 100) :]
    return {
        name: (statistics.median(s[i] for s in spans) * 1000, statistics.median(s[i] for s in slowest) * 1000)
        for i, name in enumerate(SEGMENTS)
    }


def tail_line(name: str, found: dict[str, tuple[float, float]]) -> str:
    parts = ", ".join(f"{segment} {every:.1f} / {slow:.1f}" for segment, (every, slow) in found.items())
    return f"  {name:<5} median ms, every message / slowest 1%: {parts}"


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
    started = offer(count, 1, lambda _payload: client.lpush(key, repr(time.time())), rate)
    consumer.join(60)
    return figures(latencies, time.time() - started)


def start_workers(env: dict[str, str], gateway_url: str, concurrency: int, tmp: Path) -> tuple[Any, Any]:
    """The fleet's inbound worker and the bare task's worker, both consuming until stopped."""
    worker = ["worker", "inbound", "--concurrency", str(concurrency), "--name", "bench@inbound"]
    fleet = FleetProcess([*worker, "--loglevel", "WARNING"], env, tmp / "fleet-worker.log")
    log = (tmp / "bare-worker.log").open("ab")
    bare = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.bare_app", "worker", "-Q", "bench_bare",
         "-c", str(concurrency), "-n", "bench@bare", "--loglevel", "WARNING"],
        cwd=ROOT,
        env={**env, "BENCH_GATEWAY_URL": gateway_url},
        stdout=log,
        stderr=log,
    )  # fmt: skip
    log.close()  # the child keeps its own descriptor
    return fleet, bare


def stop_workers(fleet: Any, bare: Any) -> None:
    fleet.stop()
    bare.terminate()
    bare.wait(20)


def round_trips(
    conn: psycopg.Connection, gateway: Any, env: dict[str, str], count: int, chats: int
) -> dict[str, float]:
    """PostgreSQL round trips per answered message, fleet and bare task, with the database behind the relay."""
    found: dict[str, float] = {}
    tmp = ROOT / ".run" / "bench"
    with RoundTripRelay(os.environ["DATABASE_URL"]) as relay:
        fleet, bare = start_workers({**env, "DATABASE_URL": relay.url}, gateway.url, 2, tmp)
        try:
            time.sleep(5)
            for name, send in (("fleet", fleet_sender()), ("bare", bare_sender())):
                conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
                gateway.clear()
                relay.take()
                offer(count, chats, send)
                delivered(conn, gateway, count)
                found[name] = relay.take() / count
        finally:
            stop_workers(fleet, bare)
    return found


def medians(passes: list[tuple[float, dict[str, Any]]]) -> tuple[float, dict[str, Any]]:
    """The median rate and the median of each count over a worker's saturation passes; the busiest Redis
    commands as the median pass (by rate) counted them."""
    figures_of = [cost for _, cost in passes]
    cost: dict[str, Any] = {
        key: statistics.median(found[key] for found in figures_of) for key in figures_of[0] if key != "busiest_commands"
    }
    middle = sorted(passes, key=lambda found: found[0])[len(passes) // 2]
    cost["busiest_commands"] = middle[1]["busiest_commands"]
    return statistics.median(rate for rate, _ in passes), cost


def run_benchmark(
    count: int, seconds: float, chats: int, concurrency: int, trips: int, repeat: int = 3
) -> dict[str, Any]:
    upgrade(os.environ["DATABASE_URL"])
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    tmp = ROOT / ".run" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"concurrency": concurrency}
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
            (tmp / "bare-worker.log").unlink(missing_ok=True)
            fleet, bare = start_workers(env, gateway.url, concurrency, tmp)
            try:
                time.sleep(5)
                passes: dict[str, list[tuple[float, dict[str, Any]]]] = {"fleet": [], "bare": []}
                for _ in range(repeat):  # interleaved, so a slow spell of the machine hits both alike
                    for name, send, pid in (("fleet", fleet_sender(), fleet.pid), ("bare", bare_sender(), bare.pid)):
                        rate, cost = saturation(conn, gateway, send, count, chats, pid)
                        passes[name].append((rate, cost))
                        print(f"{name:<5} saturation: {count} messages at once, {rate:.1f} msg/s")
                        print(cost_line(name, cost), flush=True)
                for name, found in passes.items():
                    results[f"{name}_saturation"], results[f"{name}_cost"] = medians(found)
                if repeat > 1:
                    print(f"medians of {repeat} passes each:")
                    for name in passes:
                        print(f"{name:<5} saturation {results[f'{name}_saturation']:.1f} msg/s")
                        print(cost_line(name, results[f"{name}_cost"]), flush=True)
                half = results["fleet_saturation"] / 2
                print(f"offered {half:.0f} msg/s (half the fleet's saturation) for {seconds:g} s over {chats} chats:")
                for name, label, send in (
                    ("fleet", "fleet inbound (to gateway)", fleet_sender()),
                    ("bare", "bare Celery task (to gateway)", bare_sender()),
                ):
                    results[name] = latency(conn, gateway, send, half, seconds, chats)
                    print("  " + line(label, results[name]), flush=True)
                for name in ("fleet", "bare"):
                    print(tail_line(name, results[name]["tail"]))
                results["redis"] = bench_raw_redis(half, seconds)
                print("  " + line("raw Redis LPUSH/BRPOP (to pop)", results["redis"]), flush=True)
            finally:
                stop_workers(fleet, bare)
                peak.stop.set()
            if trips:
                results["round_trips"] = round_trips(conn, gateway, env, trips, chats)
                print(
                    f"round trips to PostgreSQL per answered message, counted on the wire ({trips} messages):"
                    f" fleet {results['round_trips']['fleet']:.2f}, bare task {results['round_trips']['bare']:.2f}"
                )
    budget = connection_budget(load_settings())
    results["peak_connections"] = peak.peak
    print(
        f"most fleet connections seen: {peak.peak} (this bench runs one worker type of the fleet's budget of"
        f" {budget.total}; its share is {concurrency} x {budget.lines[0].per_process})"
    )
    if trips:
        print(goals.at_most("PostgreSQL round trips per answered message", results["round_trips"]["fleet"], 8))
    fleet_cost, bare_cost = results["fleet_cost"], results["bare_cost"]
    fleet_cpu = fleet_cost["main_cpu_ms"] + fleet_cost["children_cpu_ms"]
    bare_cpu = bare_cost["main_cpu_ms"] + bare_cost["children_cpu_ms"]
    print(goals.at_most("fleet worker CPU per message / bare task's", fleet_cpu / bare_cpu, 1.5, "x"))
    print(goals.at_most("fleet main-process CPU per message", fleet_cost["main_cpu_ms"], 1.0, " ms"))
    loop_ms = fleet_cost["main_thread_cpu_ms"]
    print(
        f"     (a millisecond of CPU moves with the machine's speed: against the bare task's own main process in the"
        f" same run, {bare_cost['main_cpu_ms']:.2f} ms, the fleet's is"
        f" {fleet_cost['main_cpu_ms'] / bare_cost['main_cpu_ms']:.2f}x; its event loop alone"
        f" {loop_ms:.2f} ms, {loop_ms / bare_cost['main_cpu_ms']:.2f}x, the lanes router"
        f" {fleet_cost['main_cpu_ms'] - loop_ms:.2f} ms)"
    )
    fleet_rate, bare_rate = results["fleet_saturation"], results["bare_saturation"]
    print(goals.at_least("fleet saturation / bare task saturation", fleet_rate / bare_rate, 0.9, "x"))
    print(goals.at_least("fleet saturation", fleet_rate, 200, " msg/s"))
    print(goals.at_most("fleet p99 at half its saturation", results["fleet"]["p99"], 100, " ms"))
    p99_ratio = results["fleet"]["p99"] / results["bare"]["p99"]
    print(goals.at_most("fleet p99 / bare task p99, same rate", p99_ratio, 3, "x"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=2000, help="messages enqueued at once for the saturation point")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--trips", type=int, default=1000, help="messages of the round-trip pass (0: none)")
    parser.add_argument("--repeat", type=int, default=3, help="saturation passes of each worker; medians count")
    args = parser.parse_args()
    run_benchmark(args.burst, args.seconds, args.chats, args.concurrency, args.trips, args.repeat)


if __name__ == "__main__":
    main()
