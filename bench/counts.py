"""Counts that hold still on a busy machine: what a run cost, from the servers' and the kernel's own accounting.

- PostgreSQL: transactions committed and rolled back in the benchmark's database (`pg_stat_database`), and
  every PostgreSQL process's CPU time;
- Redis: commands executed (`INFO commandstats`, by command) and the server's CPU time (`INFO cpu`);
- processes: user + system CPU of each given process and its children, from /proc (clock ticks), split into
  the worker's main process and its children, and the main process's own thread (Celery's event loop: the
  consumer, the pool's results, the acknowledgements) told apart from the threads it started (the inbound
  worker's lanes router).

A `Counts` is taken before and after a run; `per_message` divides the difference by the messages answered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ms(pid: int, *, reaped_children: bool = False, main_thread: bool = False) -> float:
    """User + system CPU of one process so far, in milliseconds (0 when it is gone); with `reaped_children`, plus
    that of its children that ended and were waited for (a worker's recycled pool processes); with
    `main_thread`, of its main thread only."""
    path = Path(f"/proc/{pid}/task/{pid}/stat") if main_thread else Path(f"/proc/{pid}/stat")
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks * 1000 / TICK


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                found.append(int(entry.name))
    return found


def _postgres_cpu_ms() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name.startswith("postgres"):
                total += _cpu_ms(int(entry.name))
    return total


@dataclass
class Counts:
    transactions: int = 0
    redis_commands: dict[str, int] = field(default_factory=dict)
    redis_cpu_ms: float = 0.0
    postgres_cpu_ms: float = 0.0
    main_cpu_ms: float = 0.0
    main_thread_cpu_ms: float = 0.0
    children_cpu_ms: float = 0.0

    @classmethod
    def take(cls, conn: psycopg.Connection, client: redis.Redis, main_pid: int) -> Counts:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        stats: dict[str, Any] = client.info("commandstats")
        cpu: dict[str, Any] = client.info("cpu")
        return cls(
            transactions=int(row[0]) if row else 0,
            redis_commands={name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()},
            redis_cpu_ms=(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1000,
            postgres_cpu_ms=_postgres_cpu_ms(),
            main_cpu_ms=_cpu_ms(main_pid),
            main_thread_cpu_ms=_cpu_ms(main_pid, main_thread=True),
            children_cpu_ms=sum(_cpu_ms(child) for child in children_of(main_pid))
            + _cpu_ms(main_pid, reaped_children=True)
            - _cpu_ms(main_pid),
        )

    def per_message(self, before: Counts, messages: int) -> dict[str, float]:
        """What one answered message cost between `before` and these counts. Children that ended meanwhile count
        through their parent's accounting of waited-for children; a child still ending when the counts are taken
        is not yet in it."""
        commands = sum(self.redis_commands.values()) - sum(before.redis_commands.values())
        return {
            "transactions": (self.transactions - before.transactions) / messages,
            "redis_commands": commands / messages,
            "redis_cpu_ms": (self.redis_cpu_ms - before.redis_cpu_ms) / messages,
            "postgres_cpu_ms": (self.postgres_cpu_ms - before.postgres_cpu_ms) / messages,
            "main_cpu_ms": (self.main_cpu_ms - before.main_cpu_ms) / messages,
            "main_thread_cpu_ms": (self.main_thread_cpu_ms - before.main_thread_cpu_ms) / messages,
            "children_cpu_ms": (self.children_cpu_ms - before.children_cpu_ms) / messages,
        }

    def busiest_commands(self, before: Counts, messages: int, top: int = 6) -> list[tuple[str, float]]:
        deltas = {name: calls - before.redis_commands.get(name, 0) for name, calls in self.redis_commands.items()}
        ranked = sorted(((name, calls / messages) for name, calls in deltas.items() if calls), key=lambda x: -x[1])
        return ranked[:top]
