"""Fair turns across salons: a quiet salon's reply time alone, and while another salon floods the fleet.

    .venv/bin/python -m bench.fairness --flood 1500 --every 0.1 --concurrency 2

Uses its own database (fleet_bench) and Redis db 14, starts its own inbound worker (burst window 0) and a
local gateway stand-in. The quiet salon sends one message every `--every` seconds, each in its own chat, and
its enqueue-to-reply times are measured: first alone (for as long as the flood phase will last, at most 20 s),
then while the other salon's `--flood` messages, enqueued at once, are answered. The flood's own pace is
reported beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
from bench.services import use_bench_services

use_bench_services()
os.environ["FLEET_ENVIRONMENT"] = "test"

import psycopg
import redis

from bench import goals
from ops.standins.gateway import GatewayStandIn, gateway_stand_in
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from tests.support.processes import FleetProcess, wait_until
from tests.support.seed import COMPANY, chat_message, seed_salon
from workers.producer import enqueue_many, enqueue_message

QUIET = 962303


class QuietSalon(threading.Thread):
    """Sends one message every `every` seconds, each in a chat of its own, until stopped."""

    def __init__(self, every: float, first: int) -> None:
        super().__init__(daemon=True)
        self.every, self.next = every, first
        self.sent: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            chat = f"+7913{self.next:07d}"
            self.sent[chat] = time.time()
            enqueue_message(chat_message(QUIET, chat, self.next))
            self.next += 1
            self.done.wait(self.every)


def replies_ms(gateway: GatewayStandIn, sent: dict[str, float]) -> list[float]:
    wait_until(lambda: all(gateway.to(chat) for chat in sent), 60, "the quiet salon's replies")
    return [(gateway.to(chat)[0].at - at) * 1000 for chat, at in sent.items()]


def summary(name: str, values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return (
        f"{name:<34} {len(values):>5} replies   p50 {cuts[49]:>8.1f} ms   p99 {cuts[98]:>8.1f} ms"
        f"   max {max(values):>8.1f} ms"
    )


def run(flood: int, every: float, concurrency: int) -> dict[str, Any]:
    upgrade(os.environ["DATABASE_URL"])
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    tmp = ROOT / ".run" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE companies RESTART IDENTITY CASCADE")
        open_process_pool(role="bench", max_size=2, wait=True)
        seed_salon()
        seed_salon(QUIET)
        close_process_pool()
    with gateway_stand_in() as gateway:
        env = {**os.environ, "FLEET_GATEWAY__SEND_URL": gateway.url, "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0"}
        worker = [
            "worker",
            "inbound",
            "--concurrency",
            str(concurrency),
            "--name",
            "bench@fair",
            "--loglevel",
            "WARNING",
        ]
        fleet = FleetProcess(worker, env, tmp / "fairness-worker.log")
        try:
            time.sleep(5)
            alone = QuietSalon(every, 0)
            alone.start()
            time.sleep(min(20.0, flood / 100))
            alone.done.set()
            alone.join()
            quiet_alone = replies_ms(gateway, alone.sent)

            flooded_at = time.time()
            before = gateway.count()
            during = QuietSalon(every, 100_000)
            during.start()
            enqueue_many([chat_message(COMPANY, f"+7912{n % 150:07d}", n) for n in range(flood)])
            wait_until(lambda: gateway.count() - before - len(during.sent) >= flood, 600, "the flood answered")
            flood_seconds = time.time() - flooded_at
            during.done.set()
            during.join()
            quiet_flood = replies_ms(gateway, during.sent)
        finally:
            fleet.stop()
    print(summary("quiet salon alone", quiet_alone))
    print(summary(f"quiet salon during a {flood}-message flood", quiet_flood))
    print(f"{'flood':<34} {flood:>5} replies   in {flood_seconds:.1f} s ({flood / flood_seconds:.1f} msg/s)")
    p99 = statistics.quantiles(quiet_flood, n=100, method="inclusive")[98]
    print(goals.at_most("quiet salon p99 during the flood", p99, 1000, " ms"))
    return {"alone": quiet_alone, "flood": quiet_flood, "flood_seconds": flood_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=1500, help="messages the flooding salon sends at once")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between the quiet salon's messages")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    run(args.flood, args.every, args.concurrency)


if __name__ == "__main__":
    main()
