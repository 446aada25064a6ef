"""Reads that may be a few seconds old go to a streaming replica, when one is set, up and close enough.

The rule: `reading()` is for read-only work that tolerates `FLEET_REPLICA__MAX_LAG_SECONDS` of staleness
(the health report's reads of the fleet's tables). Writes, and reads a write depends on, stay on the primary:
inside a transaction, `reading()` hands back the transaction's own connection, so read-then-write code is
never split across servers. A replica that is down, lags past the limit, or is no longer in recovery (it was
promoted) is skipped: its reads go to the primary until the next check, at most every
`FLEET_REPLICA__CHECK_SECONDS`, and the health report says which it is and why.

How lag is measured: at each check the process notes where the primary's WAL ends and when. The replica has
everything the primary had at the newest noted moment whose position it has replayed, so its reads are at
most that old. (Comparing the replica's received and replayed positions misreads an idle replica, whose
received WAL can end in page padding that is never replayed; the age of its last replayed transaction
misreads any idle primary.) Before a process has a noted moment the replica has passed, the age of the last
transaction it replayed stands in, which can only overstate the lag.

Each process has its own small replica pool (opened on first use, never across a fork), like the primary's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.core import db
from shared.core.pool import process_role
from shared.core.resources import resource
from shared.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

PRIMARY_LSN_SQL = "SELECT pg_current_wal_lsn()::text AS lsn"
REPLICA_SQL = (
    "SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replayed,"
    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS since_last_replayed"
)
SAMPLES_KEPT = 256


@dataclass(frozen=True)
class Verdict:
    """Whether reads may go to the replica now, with the measured lag and, when not, why."""

    usable: bool
    lag_seconds: float | None
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"in_use": self.usable, "lag_seconds": self.lag_seconds, "skipped_because": self.reason}


def lsn_number(text: str) -> int:
    """'16/B374D848' as one number, for comparing WAL positions in Python."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


class _ReplicaReads:
    """This process's replica pool, its noted primary positions, and its latest verdict."""

    def __init__(self, settings: Settings, role: str) -> None:
        rs = settings.replica
        if rs.url is None:
            raise ValueError("no replica is configured (FLEET_REPLICA__URL)")
        self.settings = rs
        self.pool = ConnectionPool(
            rs.url.get_secret_value(),
            min_size=0,
            max_size=rs.pool_max_size,
            timeout=rs.connect_timeout,
            max_lifetime=settings.pool.max_lifetime,
            max_idle=settings.pool.max_idle,
            check=ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "application_name": f"fleet-{role}-replica",
                "options": f"-c statement_timeout={settings.pool.statement_timeout_ms}",
                "connect_timeout": rs.connect_timeout,
            },
            name=f"fleet-{role}-replica",
            open=False,
        )
        self.pool.open(wait=False)
        self.samples: deque[tuple[int, float]] = deque(maxlen=SAMPLES_KEPT)  # (primary's WAL end, monotonic)
        self.verdict: Verdict | None = None
        self.checked_at = -float("inf")
        self.lock = threading.Lock()

    def due(self) -> bool:
        return time.monotonic() - self.checked_at >= self.settings.check_seconds

    def skipping(self) -> bool:
        """Skipped at the last check, and not yet time to look again: no connection attempt per read."""
        return not self.due() and self.verdict is not None and not self.verdict.usable

    def judge(self, conn: psycopg.Connection[Any]) -> Verdict:
        """Measure the replica on `conn` against the primary's WAL end, noted now and at earlier checks."""
        target = lsn_number(str(db.run(PRIMARY_LSN_SQL, table=None, operation="select")[0]["lsn"]))
        now = time.monotonic()
        with self.lock:
            self.samples.append((target, now))
        row = conn.execute(REPLICA_SQL).fetchone()
        if row is None or not row[0]:
            return Verdict(False, None, "the replica is not in recovery (promoted, or a primary): not used for reads")
        replayed = lsn_number(row[1]) if row[1] else -1
        with self.lock:
            passed = [moment for position, moment in self.samples if position <= replayed]
        lag = round(now - max(passed), 3) if passed else round(float(row[2] or 0.0), 3)
        if lag > self.settings.max_lag_seconds:
            return Verdict(
                False, lag, f"the replica lags {lag:.1f} s, over the {self.settings.max_lag_seconds:g} s allowed"
            )
        return Verdict(True, lag, None)

    def record(self, verdict: Verdict) -> None:
        with self.lock:
            previous = self.verdict
            self.verdict, self.checked_at = verdict, time.monotonic()
        if previous is None or previous.usable != verdict.usable:
            if verdict.usable:
                log.info("replica in use (lag %.1f s)", verdict.lag_seconds or 0.0)
            else:
                log.warning("replica skipped, reads go to the primary: %s", verdict.reason)


def _process_reads(settings: Settings) -> _ReplicaReads:
    """One of the process's resources (made after fork, closed with the others at child shutdown)."""
    return resource(
        "replica-reads", lambda: _ReplicaReads(settings, process_role()), lambda reads: reads.pool.close(timeout=5)
    )


def current_verdict(settings: Settings) -> Verdict | None:
    """What this process decided at its last check (None before the first, or without a replica)."""
    return _process_reads(settings).verdict if settings.replica.url is not None else None


def probe(settings: Settings) -> Verdict | None:
    """Check the replica now (for the health report); None without one."""
    if settings.replica.url is None:
        return None
    reads = _process_reads(settings)
    reads.checked_at = -float("inf")
    with _replica_connection(settings):
        pass
    return reads.verdict


@contextmanager
def _replica_connection(settings: Settings) -> Iterator[psycopg.Connection[Any] | None]:
    """A replica connection judged usable, or None (down, lagging, promoted, or not set)."""
    if settings.replica.url is None:
        yield None
        return
    reads = _process_reads(settings)
    if reads.skipping():
        yield None
        return
    borrowed = False
    try:
        with reads.pool.connection() as conn:
            borrowed = True
            if reads.due():
                try:
                    reads.record(reads.judge(conn))
                except psycopg.Error as exc:
                    reads.record(Verdict(False, None, f"the replica's lag could not be read ({type(exc).__name__})"))
            yield conn if reads.verdict is not None and reads.verdict.usable else None
    except (PoolTimeout, psycopg.OperationalError) as exc:
        if borrowed:  # the block's own read failed on the replica: skip it from now on, fail this read
            reads.record(Verdict(False, None, f"a read on the replica failed ({type(exc).__name__})"))
            raise
        reads.record(Verdict(False, None, f"the replica is unreachable ({type(exc).__name__})"))
        yield None


@contextmanager
def reading(settings: Settings | None = None) -> Iterator[psycopg.Connection[Any]]:
    """Run the block's repository reads on the replica when it may be used, else on the primary.

    Inside a transaction: the transaction's connection (what is read there may decide a write). A write
    inside the block fails on the replica (it is read-only), so misuse shows at once instead of diverging.
    """
    current = db.current_connection()
    if current is not None:
        yield current
        return
    with _replica_connection(settings or get_settings()) as replica:
        if replica is not None:
            with db.using(replica):
                yield replica
            return
    with db.connection() as primary, db.using(primary):
        yield primary
