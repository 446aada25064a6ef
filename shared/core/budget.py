"""The PostgreSQL connection budget of the whole fleet on one host.

The system this replaces ran a pool of 20 in each of 7 processes and exhausted the server. Here the worst
case is computed from settings and checked before any process starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.core.db import run
from shared.core.settings import Settings, WorkerType


@dataclass(frozen=True)
class BudgetLine:
    name: str
    processes: int
    per_process: int

    @property
    def connections(self) -> int:
        return self.processes * self.per_process


@dataclass(frozen=True)
class ConnectionBudget:
    lines: tuple[BudgetLine, ...]
    limit: int

    @property
    def total(self) -> int:
        return sum(line.connections for line in self.lines)

    @property
    def fits(self) -> bool:
        return self.total <= self.limit

    def explain(self) -> str:
        """The arithmetic, one line per consumer, as an operator would check it by hand."""
        width = max(len(line.name) for line in self.lines)
        rows = [
            f"  {line.name:<{width}}  {line.processes:>3} x {line.per_process:>2} = {line.connections:>4}"
            for line in self.lines
        ]
        verdict = "fits" if self.fits else f"EXCEEDS the limit by {self.total - self.limit}"
        rows.append(f"  {'total':<{width}}            {self.total:>4}  (limit {self.limit}: {verdict})")
        return "connection budget (processes x pool max):\n" + "\n".join(rows)


class BudgetExceeded(RuntimeError):
    """The configured fleet could open more connections than the database allows it."""


def connection_budget(settings: Settings) -> ConnectionBudget:
    """The connections the fleet may hold on PostgreSQL itself: every pool's maximum, or behind a pooler, the
    pooler's server pool plus the session connections that bypass it."""
    if settings.pool.pooler != "none":
        return _budget_behind_a_pooler(settings)
    pool_max = settings.pool.max_size
    lines = [BudgetLine(f"worker {wt.value}", settings.workers.of(wt).concurrency, pool_max) for wt in WorkerType]
    lines += [
        BudgetLine("beat", 1, settings.budget.beat),
        BudgetLine("flower", 1, settings.budget.flower),
        BudgetLine("health service", 1, settings.budget.health),
        BudgetLine("reserved", 1, settings.budget.reserved),
    ]
    return ConnectionBudget(tuple(lines), settings.budget.limit)


def _budget_behind_a_pooler(settings: Settings) -> ConnectionBudget:
    """Each process's pool talks to the pooler (its clients, not PostgreSQL's); what reaches PostgreSQL is the
    pooler's server pool and the session path: one connection per inbound child for the per-chat answering
    lock, and a backup's two (pg_dump and the row counts on its snapshot)."""
    lines = [
        BudgetLine("PgBouncer server pool", 1, settings.pool.pooler_server_connections),
        BudgetLine("session: inbound answering locks", settings.workers.of(WorkerType.INBOUND).concurrency, 1),
        BudgetLine("session: backup (pg_dump)", settings.workers.of(WorkerType.BACKUPS).concurrency, 2),
        BudgetLine("reserved", 1, settings.budget.reserved),
    ]
    return ConnectionBudget(tuple(lines), settings.budget.limit)


def require_budget(settings: Settings) -> ConnectionBudget:
    budget = connection_budget(settings)
    if not budget.fits:
        raise BudgetExceeded(
            "refusing to start: the fleet could open more PostgreSQL connections than allowed.\n"
            + budget.explain()
            + "\nlower FLEET_WORKERS__<TYPE>__CONCURRENCY or FLEET_POOL__MAX_SIZE, or raise FLEET_BUDGET__LIMIT"
        )
    return budget


def connections_by_role() -> dict[str, int]:
    """The fleet's open connections to PostgreSQL, by application name (`fleet-<role>`), as the server sees them."""
    rows = run(
        "SELECT application_name, count(*) AS n FROM pg_stat_activity WHERE application_name LIKE 'fleet-%%'"
        " GROUP BY application_name ORDER BY 1",
        table="pg_stat_activity",
        operation="select",
    )
    return {row["application_name"]: row["n"] for row in rows}
