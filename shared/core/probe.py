"""Round trips through this process's pool, for pings, heartbeats and pool checks."""

from __future__ import annotations

import os
from typing import Any

from psycopg_pool import ConnectionPool

MAX_HOLD_SECONDS = 5.0


def database_round_trip(pool: ConnectionPool, hold_seconds: float = 0.0) -> dict[str, Any]:
    """Borrow a connection, optionally keep it busy (load checks), and say who answered."""
    hold = min(max(hold_seconds, 0.0), MAX_HOLD_SECONDS)
    with pool.connection() as conn:
        row = conn.execute("SELECT pg_backend_pid(), now(), pg_sleep(%s)", (hold,)).fetchone()
    assert row is not None
    backend_pid, server_time, _ = row
    return {"pid": os.getpid(), "backend_pid": backend_pid, "server_time": server_time.isoformat()}
