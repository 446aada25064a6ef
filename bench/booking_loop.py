"""The booking loop under faults: many clients book in the chat at once while the YClients stand-in commits
creates and then answers too late, and answers other requests with 503; counts what reached the calendar.

    .venv/bin/python -m bench.booking_loop --clients 40 --stalls 8 --errors 8

Uses its own database (fleet_bench) and Redis db 14, a YClients stand-in with an empty calendar, a gateway
stand-in, and real inbound and yclients workers. Prints bookings made, records in the calendar, duplicates
(records sharing one booking's api_id, or bookings linked to one record twice), create attempts, and the time
from the booking to YClients' confirmation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.services import use_bench_services

use_bench_services()

# Imported after the environment above: settings read it.
import psycopg
import redis

from ops.harness.loop_env import stand_in_env
from ops.harness.processes import FleetProcess, wait_until
from ops.standins.gateway import gateway_stand_in
from ops.standins.yclients import generate_salon, yclients_stand_in
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import load_settings
from shared.yclients.client import make_client
from shared.yclients.sync import sync_entity

ROOT = Path(__file__).resolve().parents[1]
COMPANY = 962302
FINAL = ("Салон подтвердил запись", "только что заняли в салоне", "Не удалось передать запись", "Это время только")


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def run(clients: int, stalls: int, errors: int) -> dict[str, Any]:
    upgrade(os.environ["DATABASE_URL"])
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    tmp = ROOT / ".run" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    with (
        psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as db,
        yclients_stand_in(generate_salon(COMPANY, clients=0, records=0), per_second=1000, per_minute=100_000) as yc,
        gateway_stand_in() as gateway,
    ):
        db.execute("TRUNCATE companies, dead_letters RESTART IDENTITY CASCADE")
        yclients = {
            "base_url": yc.url,
            "partner_token": "partner-token",
            "user_token": "user-token",
            "company_ids": [COMPANY],
            "requests_per_second": 1000,
            "requests_per_minute": 100_000,
        }
        settings = load_settings(yclients=yclients)
        open_process_pool(role="bench", settings=settings, max_size=2, wait=True)
        client = make_client(settings)
        for entity in ("company", "services", "staff", "schedules"):
            sync_entity(client, settings.yclients, COMPANY, entity)
        client.close()
        close_process_pool()
        env = {
            **os.environ,
            **stand_in_env(yc.url, gateway.url, COMPANY),
            "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        workers = [
            FleetProcess(["worker", kind, "--concurrency", "2", "--name", f"bench@{kind}"], env, tmp / f"{kind}.log")
            for kind in ("inbound", "yclients")
        ]
        try:
            from workers.producer import enqueue_message  # after the environment: the producer's settings

            time.sleep(4)  # the workers' start
            chats = [f"+7911555{n:04d}" for n in range(clients)]
            turns = [("2", None), ("service", None), ("slot", None)]
            for step, _ in turns:
                before = {chat: len(gateway.to(chat)) for chat in chats}
                for n, chat in enumerate(chats):
                    text = {"2": "2", "service": str(1 + n % 5), "slot": str(1 + n % 8)}[step]
                    if step == "slot":
                        yc.stall_after_commit, yc.stall_seconds = stalls, 2.0
                        if n == 0:
                            yc.inject(*([503] * errors))
                    enqueue_message(
                        {
                            "company_id": COMPANY,
                            "chat_id": chat,
                            "gateway_message_id": f"bench-{chat}-{step}",
                            "text": text,
                            "sent_at": datetime.now(UTC).isoformat(),
                        }
                    )
                wait_until(
                    lambda before=before: all(len(gateway.to(c)) > before[c] for c in chats), 120, f"answers ({step})"
                )
            wait_until(
                lambda: all(any(any(f in d.message for f in FINAL) for d in gateway.to(c)) for c in chats),
                300,
                "every booking settled",
            )
            time.sleep(1)
        finally:
            for worker in workers:
                worker.stop()
        bookings = db.execute("SELECT id, yclients_id, crm_state FROM bookings WHERE source = 'assistant'").fetchall()
        ops = db.execute(
            "SELECT attempts, status = 'done' AND coalesce(outcome, '') NOT LIKE 'refused:%',"
            " extract(epoch FROM finished_at - created_at) FROM crm_operations WHERE kind = 'create'"
        ).fetchall()
        calendar = yc.calendar(COMPANY)
        per_api_id = Counter(row["api_id"] for row in calendar if row.get("api_id"))
        linked = Counter(yclients_id for _, yclients_id, _ in bookings if yclients_id is not None)
        return {
            "clients": clients,
            "stalled_creates": stalls,
            "injected_503": errors,
            "bookings_made": len(bookings),
            "confirmed": sum(1 for *_, state in bookings if state == "synced"),
            "refused": sum(1 for *_, state in bookings if state == "refused"),
            "records_in_calendar": len(calendar),
            "duplicates": sum(n - 1 for n in per_api_id.values()) + sum(n - 1 for n in linked.values()),
            "records_without_booking": sum(1 for row in calendar if not row.get("api_id")),
            "create_attempts": sum(attempts for attempts, _, _ in ops),
            "confirm_seconds": [float(seconds) for _, confirmed, seconds in ops if confirmed and seconds],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--stalls", type=int, default=8, help="creates that commit, then answer after the timeout")
    parser.add_argument("--errors", type=int, default=8, help="requests answered 503 (nothing committed)")
    args = parser.parse_args()
    figures = run(args.clients, args.stalls, args.errors)
    seconds = figures.pop("confirm_seconds")
    for name, value in figures.items():
        print(f"{name:<24} {value}")
    if seconds:
        p50, p95 = statistics.median(seconds), _percentile(seconds, 0.95)
        print(f"{'booking to confirmation':<24} p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(seconds):.2f} s")
    print("duplicates goal: 0 -> " + ("met" if figures["duplicates"] == 0 else "NOT met"))


if __name__ == "__main__":
    main()
