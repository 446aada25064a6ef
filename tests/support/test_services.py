"""Which database and Redis db a test process uses: its own, so test processes can run side by side.

Under pytest-xdist every worker process (`PYTEST_XDIST_WORKER` = gw0, gw1, ...) gets a database of its own
(`fleet_test` becomes `fleet_gw1_test`, created and migrated by the `migrated` fixture) and a Redis db of its
own (counted down from the given one: 15, 14, 13, ...). Fleet processes a test starts inherit the same URLs,
so one test process's workers never take another's messages or rows.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

TEST_SUFFIX = "_test"


def worker_index(worker: str | None) -> int | None:
    """0 for xdist's `gw0`, None when the suite runs in one process."""
    if not worker:
        return None
    if not worker.startswith("gw") or not worker[2:].isdigit():
        raise ValueError(f"unexpected PYTEST_XDIST_WORKER {worker!r}")
    return int(worker[2:])


def database_url_for(url: str, index: int | None) -> str:
    """`.../fleet_test` for one process; `.../fleet_gw{index}_test` for worker `index`."""
    if index is None:
        return url
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.endswith(TEST_SUFFIX):
        raise ValueError(f"the test database's name must end in {TEST_SUFFIX!r}, not {name!r}")
    own = f"{name.removesuffix(TEST_SUFFIX)}_gw{index}{TEST_SUFFIX}"
    return urlunsplit(parts._replace(path=f"/{own}"))


def redis_url_for(url: str, index: int | None) -> str:
    """The given Redis db for one process; `db - index` for worker `index` (Redis has dbs 0-15)."""
    if index is None:
        return url
    parts = urlsplit(url)
    base = int(parts.path.lstrip("/") or 0)
    own = base - index
    if own < 0:
        raise ValueError(f"Redis db {base} leaves no db for test process {index}: run fewer processes (-n)")
    return urlunsplit(parts._replace(path=f"/{own}"))


def own_database_url(url: str) -> str:
    """This test process's database, from the suite's one (`DATABASE_URL` as ops/run-tests sets it)."""
    return database_url_for(url, worker_index(os.environ.get("PYTEST_XDIST_WORKER")))


def own_redis_url(url: str) -> str:
    """This test process's Redis db, from the suite's one."""
    return redis_url_for(url, worker_index(os.environ.get("PYTEST_XDIST_WORKER")))
