"""Where the benchmarks that start fleet workers run: their own database, Redis db and state directory (so
their workers' Prometheus samples stay out of the fleet's /metrics). Called before project modules are
imported, because settings read the environment once."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def use_bench_services() -> None:
    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleet_bench"
    )
    os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ["FLEET_STATE_DIR"] = os.environ.get("BENCH_STATE_DIR", str(ROOT / ".run" / "bench"))
