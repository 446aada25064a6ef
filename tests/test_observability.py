"""Query metrics, pool health, and database errors reaching Sentry with tags and without personal data."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
import sentry_sdk

from shared.core.db import run
from shared.core.pool import close_process_pool, open_process_pool
from shared.data.errors import ConflictError
from shared.data.repositories.people import ClientRepository
from shared.observability.pool_health import pool_health
from shared.observability.query_metrics import QueryMetrics, query_metrics
from tests.support.seed import COMPANY


@pytest.mark.usefixtures("salon")
def test_metrics_count_what_was_executed_by_statement_type() -> None:
    clients = ClientRepository()
    for n in range(3):
        clients.insert({"company_id": COMPANY, "phone": f"+7911000000{n}"})
    clients.find_many({"company_id": COMPANY})
    clients.bulk_upsert([{"company_id": COMPANY, "yclients_id": 1, "phone": "+79110000009"}])
    snapshot = query_metrics().snapshot()
    assert snapshot["by_type"]["insert"]["count"] == 3
    assert snapshot["by_type"]["select"]["count"] == 1
    assert snapshot["by_type"]["upsert"]["count"] == 1
    assert snapshot["total"] == 5
    assert snapshot["by_type"]["insert"]["mean_ms"] > 0
    assert snapshot["percentiles_ms"]["p50"] <= snapshot["percentiles_ms"]["p99"]


@pytest.mark.usefixtures("salon")
def test_failed_statements_are_counted_as_errors() -> None:
    with pytest.raises(ConflictError):
        run("INSERT INTO companies (id, title) VALUES (%s, 'x')", (COMPANY,), table="companies", operation="insert")
    assert query_metrics().snapshot()["by_type"]["insert"]["errors"] == 1


@pytest.mark.usefixtures("salon")
def test_slow_statements_are_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    metrics = query_metrics()
    metrics.slow_threshold_ms = 50
    try:
        run("SELECT pg_sleep(0.08), " + "'padding' AS p, " * 40 + "1", table=None, operation="select")
        run("SELECT 1", table=None, operation="select")
    finally:
        metrics.slow_threshold_ms = 1000
    slow = metrics.snapshot()["slow_queries"]
    assert len(slow) == 1
    assert slow[0]["statement"].startswith("SELECT pg_sleep(0.08)")
    assert len(slow[0]["statement"]) == 200
    assert any("slow query" in record.message for record in caplog.records)


def test_percentiles_cover_only_the_last_thousand() -> None:
    metrics = QueryMetrics()
    for _ in range(1000):
        metrics.record("select", 500.0, "SELECT 1")
    for _ in range(1000):
        metrics.record("select", 1.0, "SELECT 1")
    snapshot = metrics.snapshot()
    assert snapshot["window"] == 1000
    assert snapshot["percentiles_ms"] == {"p50": 1.0, "p95": 1.0, "p99": 1.0}
    assert snapshot["by_type"]["select"]["count"] == 2000
    assert len(snapshot["slow_queries"]) == 0


def test_pool_health_reports_normal_and_at_capacity(db: psycopg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    pool = open_process_pool(role="health", max_size=2, wait=True)
    try:
        idle = pool_health(pool)
        assert idle["status"] == "normal"
        assert idle["max"] == 2
        assert idle["in_use"] == 0
        with pool.connection(), pool.connection():
            full = pool_health(pool)
        assert full["status"] == "at capacity"
        assert full["in_use"] == 2
        assert full["utilisation_percent"] == 100.0
        assert any("at capacity" in record.message for record in caplog.records)
    finally:
        close_process_pool()


@pytest.mark.usefixtures("salon")
def test_database_errors_reach_sentry_tagged_and_without_values(recorded_events: list[dict[str, Any]]) -> None:
    clients = ClientRepository()
    clients.insert({"company_id": COMPANY, "yclients_id": 77, "phone": "+79117777777", "name": "Зоя Петрова"})
    with pytest.raises(ConflictError):
        clients.insert({"company_id": COMPANY, "yclients_id": 77, "phone": "+79118888888", "name": "Зоя Петрова"})
    sentry_sdk.flush()
    assert len(recorded_events) == 1
    event = recorded_events[0]
    assert event["tags"]["table"] == "clients"
    assert event["tags"]["operation"] == "insert"
    assert event["tags"]["component"] == "test-component"
    dumped = json.dumps(event, ensure_ascii=False)
    for personal in ("7777777", "8888888", "Зоя", "Петрова"):
        assert personal not in dumped
