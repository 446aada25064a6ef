"""Watch how many connections the fleet holds, from pg_stat_activity, while something runs."""

from __future__ import annotations

import threading
import time

import psycopg


class ConnectionPeak(threading.Thread):
    """The most `fleet-*` connections seen at once (the watcher's own role excluded); survives being cut."""

    def __init__(self, conninfo: str, own_role: str) -> None:
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.own_role = own_role
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    while not self.stop.is_set():
                        row = conn.execute(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE application_name LIKE 'fleet-%%' AND application_name <> %s"
                            " AND datname = current_database()",  # not another fleet's (or test process's)
                            (f"fleet-{self.own_role}",),
                        ).fetchone()
                        self.peak = max(self.peak, row[0] if row else 0)
                        time.sleep(0.05)
            except psycopg.Error:
                time.sleep(0.2)  # the watcher's connection was cut with the fleet's
