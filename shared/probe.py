"""Round trips through this process's pool, for pings, heartbeats and pool checks."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

from shared.settings import WorkerType

MAX_HOLD_SECONDS = 5.0


def database_round_trip(pool: ConnectionPool, hold_seconds: float = 0.0) -> dict[str, Any]:
    """Borrow a connection, optionally keep it busy (load checks), and say who answered."""
    hold = min(max(hold_seconds, 0.0), MAX_HOLD_SECONDS)
    with pool.connection() as conn:
        row = conn.execute("SELECT pg_backend_pid(), now(), pg_sleep(%s)", (hold,)).fetchone()
    assert row is not None
    backend_pid, server_time, _ = row
    return {"pid": os.getpid(), "backend_pid": backend_pid, "server_time": server_time.isoformat()}


HEARTBEAT_RETENTION_DAYS = 7


def record_heartbeat(pool: ConnectionPool, worker: str, worker_type: WorkerType | None) -> datetime:
    """Store one heartbeat row (and prune old ones); the newest row's age tells that the fleet is alive."""
    with pool.connection() as conn:
        conn.execute(
            "DELETE FROM health_checks"
            " WHERE check_name = 'heartbeat' AND checked_at < now() - make_interval(days => %s)",
            (HEARTBEAT_RETENTION_DAYS,),
        )
        row = conn.execute(
            """
            INSERT INTO health_checks (check_name, subject, status, details)
            VALUES ('heartbeat', %s, 'healthy', jsonb_build_object('pid', %s::int, 'worker_type', %s::text))
            RETURNING checked_at
            """,
            (worker, os.getpid(), worker_type.value if worker_type else None),
        ).fetchone()
    assert row is not None
    return row[0]
