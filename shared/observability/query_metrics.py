"""Per-process query metrics: what ran, how long it took, and which statements were slow."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import quantiles
from typing import Any

from shared.core.resources import resource
from shared.core.settings import get_settings

log = logging.getLogger(__name__)

WINDOW = 1000  # latest durations kept for percentiles
SLOW_KEPT = 50  # latest slow statements kept
STATEMENT_PREVIEW = 200  # characters of a slow statement logged and kept


@dataclass
class _TypeTotals:
    count: int = 0
    total_ms: float = 0.0
    errors: int = 0


@dataclass
class QueryMetrics:
    slow_threshold_ms: float = 1000.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _by_type: dict[str, _TypeTotals] = field(default_factory=dict)
    _recent_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    _slow: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=SLOW_KEPT))

    def record(
        self, statement_type: str, duration_ms: float, statement: str | Callable[[], str], *, failed: bool = False
    ) -> None:
        """`statement` may be a function giving the text: it is rendered only for a slow statement."""
        slow = duration_ms >= self.slow_threshold_ms
        if slow:
            text = statement() if callable(statement) else statement
            preview = " ".join(text.split())[:STATEMENT_PREVIEW]
        with self._lock:
            totals = self._by_type.setdefault(statement_type, _TypeTotals())
            totals.count += 1
            totals.total_ms += duration_ms
            totals.errors += int(failed)
            self._recent_ms.append(duration_ms)
            if slow:
                self._slow.append({"type": statement_type, "duration_ms": round(duration_ms, 2), "statement": preview})
        if slow:
            log.warning("slow query %.0f ms (%s): %s", duration_ms, statement_type, preview)

    def snapshot(self) -> dict[str, Any]:
        """Plain data for health jobs and the CLI."""
        with self._lock:
            recent = list(self._recent_ms)
            by_type = {
                name: {
                    "count": totals.count,
                    "errors": totals.errors,
                    "mean_ms": round(totals.total_ms / totals.count, 3) if totals.count else 0.0,
                }
                for name, totals in sorted(self._by_type.items())
            }
            slow = list(self._slow)
        return {
            "total": sum(item["count"] for item in by_type.values()),
            "by_type": by_type,
            "window": len(recent),
            "percentiles_ms": _percentiles(recent),
            "slow_threshold_ms": self.slow_threshold_ms,
            "slow_queries": slow,
        }

    def reset(self) -> None:
        with self._lock:
            self._by_type.clear()
            self._recent_ms.clear()
            self._slow.clear()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "p99": values[0]}
    cuts = quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 3), "p95": round(cuts[94], 3), "p99": round(cuts[98], 3)}


def query_metrics() -> QueryMetrics:
    """This process's metrics, one of its resources: a forked child starts from zero and never reports its
    parent's counts (threshold from settings, read when the process first records or reads)."""
    return resource("query-metrics", lambda: QueryMetrics(slow_threshold_ms=get_settings().slow_query_ms))
