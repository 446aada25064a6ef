"""Key cleanup: the batched, policy-driven cleanup against one unbatched DELETE of the same rows, in one run.

    .venv/bin/python -m bench.keys_cleanup --keys 1000000 --batch 5000 --repeat 3

The store (fleet_bench database) holds `--keys` keys over 100 companies, half of them idle sessions the
policy may delete and half pre-keys it must keep. While each path runs, a writer thread plays the gateway,
touching random idle sessions one at a time; the longest time one of its writes waited is the lock wait the
gateway would have seen. Each path runs `--repeat` times, interleaved with the other, from a fresh store: the
rows/s goal compares the medians (one DELETE alone moved between 0.24 and 0.58 s from one run to the next on
this 2-core machine), and the gateway's goal takes its longest write over every run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time

os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleet_bench")
os.environ["FLEET_ENVIRONMENT"] = "test"

import psycopg

from bench import goals
from shared.core.migrate import upgrade
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import KeysSettings
from shared.whatsapp.cleanup import cleanup_keys

COMPANIES = 100


def seed(conn: psycopg.Connection, keys: int) -> None:
    conn.execute("TRUNCATE whatsapp_keys, key_cleanup_runs")
    half = keys // 2
    conn.execute(
        "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, updated_at)"
        " SELECT 'company_' || (n %% %s), 'session', 's' || n, '{\"k\": \"v\"}', now() - interval '60 days'"
        " FROM generate_series(1, %s) n",
        (COMPANIES, half),
    )
    conn.execute(
        "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, updated_at)"
        " SELECT 'company_' || (n %% %s), 'pre-key', 'p' || n, '{\"k\": \"v\"}', now() - interval '60 days'"
        " FROM generate_series(1, %s) n",
        (COMPANIES, keys - half),
    )
    conn.execute("VACUUM ANALYZE whatsapp_keys")


class Gateway(threading.Thread):
    """Touches random idle sessions; records how long each write took (most of it lock wait)."""

    def __init__(self, keys: int) -> None:
        super().__init__(daemon=True)
        self.keys = keys
        self.stop = threading.Event()
        self.longest = 0.0
        self.writes = 0

    def run(self) -> None:
        rng = random.Random(1)
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            while not self.stop.is_set():
                n = rng.randrange(1, self.keys // 2)
                started = time.perf_counter()
                conn.execute(
                    'UPDATE whatsapp_keys SET value = \'{"k": "w"}\' WHERE company_id = %s'
                    " AND key_type = 'session' AND key_id = %s",
                    (f"company_{n % COMPANIES}", f"s{n}"),
                )
                self.longest = max(self.longest, time.perf_counter() - started)
                self.writes += 1
                time.sleep(0.005)


def measure(conn: psycopg.Connection, keys: int, work) -> tuple[int, float, float, int]:
    seed(conn, keys)
    gateway = Gateway(keys)
    gateway.start()
    time.sleep(0.3)
    started = time.perf_counter()
    deleted = work()
    seconds = time.perf_counter() - started
    gateway.stop.set()
    gateway.join()
    return deleted, seconds, gateway.longest, gateway.writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path; the median rows/s counts")
    args = parser.parse_args()
    upgrade(os.environ["DATABASE_URL"])
    open_process_pool(role="bench", max_size=1, wait=True)
    settings = KeysSettings(batch_size=args.batch)
    paths = ("batched cleanup", "one DELETE")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:

        def batched() -> int:
            report = cleanup_keys(settings)
            print(
                f"batched cleanup  {report.batches} batches, the largest {report.largest_batch:,} keys,"
                f" {report.redone} rolled back and redone (a key the gateway held or wrote, or too slow)"
            )
            return sum(report.deleted.values())

        def one_delete() -> int:
            return conn.execute(
                "DELETE FROM whatsapp_keys WHERE key_type = 'session'"
                " AND updated_at < now() - make_interval(days => 30)"
            ).rowcount

        for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits both paths alike
            for name, work in zip(paths, (batched, one_delete), strict=True):
                deleted, seconds, wait, writes = measure(conn, args.keys, work)
                runs[name].append((deleted / seconds, wait))
                print(
                    f"{name:<16} deleted {deleted:>9,} in {seconds:6.2f} s = {deleted / seconds:>10,.0f} rows/s;"
                    f" longest gateway write {wait * 1000:8.1f} ms over {writes} writes"
                )
    results = {
        name: (statistics.median(rate for rate, _ in runs[name]), max(wait for _, wait in runs[name])) for name in paths
    }
    close_process_pool()
    (rate_b, wait_b), (rate_o, wait_o) = results["batched cleanup"], results["one DELETE"]
    print(
        f"{args.keys:,} keys, half deletable, batches from {args.batch} adapting to {settings.batch_target_ms:.0f} ms,"
        f" medians of {args.repeat} runs: batched / one DELETE rows/s {rate_b / rate_o:.2f};"
        f" longest gateway wait {wait_b * 1000:.1f} ms against {wait_o * 1000:.1f} ms"
        f" ({wait_o / max(wait_b, 1e-6):.0f}x shorter)"
    )
    print(goals.at_least("batched rows/s / one DELETE rows/s", rate_b / rate_o, 0.5, "x"))
    print(goals.at_most("longest concurrent gateway write", wait_b * 1000, 100, " ms"))


if __name__ == "__main__":
    main()
