"""Fair turns across salons: a quiet salon's reply time alone, and while another salon floods the fleet, for
the fleet's lanes router and for the simplest alternative, a per-salon cap on the answering task, in one run.

    .venv/bin/python -m bench.fairness --flood 1500 --every 0.1 --concurrency 2 --cap 1

Uses its own database (fleet_bench) and Redis db 14, and a local gateway stand-in. Each design in turn gets a
fresh database and Redis db and its own inbound worker (burst window 0):

- `lanes`: `fleet worker inbound`, the router dealing the intake out in turns across salons (workers/lanes.py);
- `cap`: the same worker and tasks consuming the intake directly, each salon allowed `--cap` answering tasks
  at once, a task over the cap put back at the end of the intake (bench/salon_cap.py).

The quiet salon sends one message every `--every` seconds, each in its own chat, and its enqueue-to-reply
times are measured: first alone (for as long as the flood phase will last, at most 20 s), then while the
other salon's `--flood` messages, enqueued at once, are answered. The flood's own pace is reported beside
them, and the goal (the quiet salon's p99 during the flood within 1 s) for each design.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from bench.services import use_bench_services

use_bench_services()
os.environ["FLEET_ENVIRONMENT"] = "test"

import psycopg
import redis

from bench import goals
from bench.salon_cap import RESCHEDULED
from ops.harness.processes import wait_until, worker_is_ready
from ops.harness.seed import COMPANY, chat_message, seed_salon
from ops.standins.gateway import GatewayStandIn, gateway_stand_in
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import get_settings
from shared.observability.prometheus_metrics import ENV as PROMETHEUS_ENV
from workers.producer import enqueue_many, enqueue_message

QUIET = 962303
BOUND_MS = 1000
DESIGNS = ("lanes", "cap")


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


@dataclass
class Figures:
    design: str
    alone: list[float]
    flood: list[float]
    flood_seconds: float
    rescheduled: int
    failed_answers: int  # the worker's log: answering attempts that failed (a sound run has none)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.flood, n=100, method="inclusive")[98]


def replies_ms(gateway: GatewayStandIn, sent: dict[str, float]) -> list[float]:
    wait_until(lambda: all(gateway.to(chat) for chat in sent), 120, "the quiet salon's replies")
    return [(gateway.to(chat)[0].at - at) * 1000 for chat, at in sent.items()]


def summary(name: str, values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return (
        f"{name:<42} {len(values):>5} replies   p50 {cuts[49]:>8.1f} ms   p99 {cuts[98]:>8.1f} ms"
        f"   max {max(values):>8.1f} ms"
    )


def fresh_services() -> None:
    """An empty Redis db and database, with the flooding and the quiet salon."""
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE companies RESTART IDENTITY CASCADE")
        open_process_pool(role="bench", max_size=2, wait=True)
        seed_salon()
        seed_salon(QUIET)
        close_process_pool()


def worker_command(design: str, concurrency: int, node: str) -> list[str]:
    common = ["--concurrency", str(concurrency), "--loglevel", "WARNING"]
    if design == "lanes":
        return [sys.executable, "-m", "workers.cli", "worker", "inbound", "--name", node, *common]
    # What `fleet worker inbound` runs, on the intake itself and with the salon cap instead of the router.
    celery = [sys.executable, "-m", "celery", "-A", "bench.salon_cap_worker", "worker", "--queues", "inbound"]
    return [*celery, "--hostname", node, "--pool", "prefork", "--without-gossip", *common]


@contextmanager
def running(design: str, env: dict[str, str], concurrency: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The design's inbound worker, ready (it answers a ping), stopped warmly afterwards."""
    node = f"bench-{design}@fair"
    with log.open("wb") as output:
        proc = subprocess.Popen(
            worker_command(design, concurrency, node),
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: proc.poll() is not None or worker_is_ready(env["REDIS_URL"], node), 60, node)
            if proc.poll() is not None:
                raise RuntimeError(f"{node} exited:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(5)  # as before: the router takes its lease, the children open their pools
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)


def measure(design: str, flood: int, every: float, concurrency: int, cap: int) -> Figures:
    fresh_services()
    tmp = ROOT / ".run" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    with gateway_stand_in(companies=(COMPANY, QUIET)) as gateway:
        env = {
            **os.environ,
            "FLEET_GATEWAY__SEND_URL": gateway.url,
            "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0",
            "FLEET_WORKER_TYPE": "inbound",
            "FLEET_BENCH_SALON_CAP": str(cap),
            "FLEET_YCLIENTS__COMPANY_IDS": f"[{COMPANY}, {QUIET}]",  # the served salons: only they get lanes
            PROMETHEUS_ENV: str(get_settings().metrics_directory),
        }
        get_settings().metrics_directory.mkdir(parents=True, exist_ok=True)
        log = tmp / f"fairness-{design}-worker.log"
        with running(design, env, concurrency, log):
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
            wait_until(lambda: gateway.count() - before - len(during.sent) >= flood, 900, "the flood answered")
            flood_seconds = time.time() - flooded_at
            during.done.set()
            during.join()
            quiet_flood = replies_ms(gateway, during.sent)
        rescheduled = int(client.get(RESCHEDULED) or 0)
    failed = log.read_text(errors="replace").count("answering chat failed")
    return Figures(design, quiet_alone, quiet_flood, flood_seconds, rescheduled, failed)


def report(figures: Figures, flood: int, concurrency: int, cap: int) -> None:
    title = {
        "lanes": "lanes router (the fleet's)",
        "cap": f"per-salon cap: {cap} answering task(s) a salon, {concurrency} processes, no router",
    }[figures.design]
    print(f"-- {title}", flush=True)
    print(summary("quiet salon alone", figures.alone))
    print(summary(f"quiet salon during a {flood}-message flood", figures.flood))
    pace = flood / figures.flood_seconds
    print(f"{'flood':<42} {flood:>5} replies   in {figures.flood_seconds:.1f} s ({pace:.1f} msg/s)")
    if figures.design == "cap":
        per_message = figures.rescheduled / flood
        print(f"{'tasks put back at the cap':<42} {figures.rescheduled:>5}   ({per_message:.1f} a flood message)")
    if figures.failed_answers:
        print(f"WARNING: {figures.failed_answers} answering attempts failed in the worker (see its log)")
    print(goals.at_most(f"{figures.design}: quiet salon p99 during the flood", figures.p99, BOUND_MS, " ms"))


def run(flood: int, every: float, concurrency: int, cap: int, designs: tuple[str, ...]) -> dict[str, Figures]:
    upgrade(os.environ["DATABASE_URL"])
    results: dict[str, Figures] = {}
    for design in designs:
        results[design] = measure(design, flood, every, concurrency, cap)
        report(results[design], flood, concurrency, cap)
    if {"lanes", "cap"} <= set(results):
        lanes, capped = results["lanes"], results["cap"]
        meets = capped.p99 <= BOUND_MS
        print(
            f"the cap {'meets' if meets else 'does NOT meet'} the {BOUND_MS} ms bound"
            f" (p99 {capped.p99:.0f} ms against the router's {lanes.p99:.0f} ms);"
            f" flood pace {flood / capped.flood_seconds:.1f} against {flood / lanes.flood_seconds:.1f} msg/s"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=1500, help="messages the flooding salon sends at once")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between the quiet salon's messages")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--cap", type=int, default=1, help="answering tasks a salon may run at once (cap design)")
    parser.add_argument("--design", choices=DESIGNS, action="append", help="run only this design (repeatable)")
    args = parser.parse_args()
    run(args.flood, args.every, args.concurrency, args.cap, tuple(args.design or DESIGNS))


if __name__ == "__main__":
    main()
