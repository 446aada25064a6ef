"""The health service over real HTTP: every part healthy and unhealthy, /metrics, no personal data, alerts."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sentry_sdk
from prometheus_client.parser import text_string_to_metric_families

from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import Settings, load_settings
from shared.data.dead_letters import SPOOL_KEY
from shared.health.process_stats import publish
from shared.health.report import build_report, store_and_alert
from shared.health.server import authorized, make_server
from shared.observability.prometheus_metrics import (
    POOL_WAIT_SECONDS,
    QUEUE_WAIT_SECONDS,
    STATEMENT_SECONDS,
    TASK_OUTCOMES,
    TASK_SECONDS,
)
from tests.support.healthy_fleet import NAME, PHONE, TEXT, make_healthy
from tests.support.seed import COMPANY, seed_salon


@pytest.fixture
def health_settings(fleet_env: dict[str, str]) -> Settings:
    return load_settings(yclients={"company_ids": [COMPANY]})


@pytest.fixture
def service(db: psycopg.Connection, health_settings: Settings, clean_redis: str) -> Iterator[str]:
    open_process_pool(role="test", max_size=2, wait=True)
    seed_salon()
    make_healthy(db)
    with make_server(health_settings, port=0).running() as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    close_process_pool()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # a loaded CI machine builds the report slowly
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def no_personal_data(body: str) -> None:
    for personal in (PHONE, PHONE[1:], NAME, TEXT):
        assert personal not in body


PATHS = [
    "/health",
    "/health/database",
    "/health/database/metrics",
    "/health/whatsapp",
    "/health/queues",
    "/health/backups",
    "/health/sync",
    "/health/crm",
    "/metrics",
]


@pytest.mark.parametrize("path", PATHS)
def test_every_answer_is_healthy_on_a_healthy_fleet_and_holds_no_personal_data(service: str, path: str) -> None:
    status, body = get(service + path)
    assert status == 200, body
    no_personal_data(body)
    assert "postgresql://" not in body
    assert "redis://" not in body


def test_a_backed_up_queue_makes_queues_and_the_whole_fleet_unhealthy(service: str, clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    client.rpush("inbound", *[b"{}"] * 1000)
    status, body = get(service + "/health/queues")
    assert status == 503
    assert json.loads(body)["queues"]["inbound"]["waiting"] == 1000
    status, body = get(service + "/health")
    assert status == 503
    assert json.loads(body)["components"]["queues"]["problems"] == ["1000 messages waiting in inbound"]


def test_dead_letters_waiting_in_the_spool_are_a_warning_and_a_metric(service: str, clean_redis: str) -> None:
    redis.Redis.from_url(clean_redis).lpush(SPOOL_KEY, *[b"{}"] * 100)
    status, body = get(service + "/health/queues")
    assert status == 200, "a warning, not an outage"
    assert json.loads(body)["dead_letter_spool"] == 100
    assert "100 dead letters parked in Redis" in json.loads(body)["problems"][0]
    _, metrics = get(service + "/metrics")
    assert "fleet_dead_letter_spool 100.0" in metrics


def test_a_stale_backup_is_unhealthy(service: str, db: psycopg.Connection) -> None:
    db.execute("UPDATE backups SET finished_at = now() - interval '60 hours'")
    status, body = get(service + "/health/backups")
    assert status == 503
    assert "the newest verified backup is 60 h old" in json.loads(body)["problems"]


def test_a_stale_sync_is_unhealthy(service: str, db: psycopg.Connection) -> None:
    db.execute("UPDATE sync_runs SET finished_at = now() - interval '2 hours' WHERE entity = 'records'")
    status, body = get(service + "/health/sync")
    assert status == 503
    assert json.loads(body)["problems"] == [f"records of company {COMPANY} is stale (2.0 h)"]


def test_a_booking_stuck_on_its_way_to_yclients_is_unhealthy_and_a_given_up_one_a_warning(
    service: str, db: psycopg.Connection
) -> None:
    staff = db.execute("SELECT id FROM staff LIMIT 1").fetchone()[0]
    booking = db.execute(
        "INSERT INTO bookings (company_id, staff_id, starts_at, ends_at, source, crm_state)"
        " VALUES (%s, %s, now() + interval '1 day', now() + interval '25 hours', 'assistant', 'pending') RETURNING id",
        (COMPANY, staff),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO crm_operations (company_id, booking_id, kind, status, created_at) VALUES"
        " (%s, %s, 'create', 'pending', now() - interval '45 minutes'), (%s, %s, 'cancel', 'failed', now())",
        (COMPANY, booking, COMPANY, booking),
    )
    status, body = get(service + "/health/crm")
    assert status == 503
    problems = json.loads(body)["problems"]
    assert problems[0] == "a booking has waited 45 min to reach YClients"
    assert "1 bookings could not be carried into YClients (dead letters)" in problems
    _, metrics = get(service + "/metrics")
    assert "fleet_crm_pending 1.0" in metrics
    assert "fleet_crm_failed 1.0" in metrics


def test_a_pool_at_capacity_is_reported_by_its_process(
    service: str, clean_redis: str, health_settings: Settings
) -> None:
    client = redis.Redis.from_url(clean_redis)
    close_process_pool()
    pool = open_process_pool(role="inbound", max_size=1, wait=True)
    with pool.connection():
        publish(client, "inbound", 60, force=True)
    status, body = get(service + "/health/database")
    assert status == 503
    part = json.loads(body)
    assert any("is at capacity" in problem for problem in part["problems"])
    assert part["pools"][0]["in_use"] == 1


def test_metrics_parse_as_prometheus_text(service: str, clean_redis: str) -> None:
    redis.Redis.from_url(clean_redis).rpush("yclients", b"{}", b"{}")
    status, body = get(service + "/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("fleet_queue_waiting", (("queue", "yclients"),))] == 2
    assert samples[("fleet_health_status", ())] == 0
    assert samples[("fleet_sync_age_hours", (("company", str(COMPANY)), ("entity", "records")))] < 0.1
    assert 1.9 < samples[("fleet_backup_age_hours", ())] < 2.1


MONITORING = Path(__file__).resolve().parent.parent / "ops" / "monitoring"


def test_the_dashboard_and_alert_rules_use_only_metrics_the_fleet_serves(service: str) -> None:
    """A renamed or misspelt metric would leave a Grafana panel empty and an alert silent forever."""
    served = {family.name for family in text_string_to_metric_families(get(service + "/metrics")[1])}
    served |= {metric._name for metric in (STATEMENT_SECONDS, POOL_WAIT_SECONDS, TASK_SECONDS, QUEUE_WAIT_SECONDS)}
    served |= {TASK_OUTCOMES._name, "up"}
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = (MONITORING / "prometheus-alerts.yml").read_text()
    expressions += re.findall(r"^\s*expr: (.+)$", rules, flags=re.MULTILINE)
    assert len(expressions) > 20
    used = {name for expr in expressions for name in re.findall(r"\b(up|fleet_[a-z0-9_]+)\b", expr)}
    unknown = {name for name in used if re.sub(r"_(bucket|count|sum|total)$", "", name) not in served}
    assert not unknown, f"not served by /metrics: {sorted(unknown)}"


def test_alerts_are_raised_once_per_change_of_state(
    service: str, db: psycopg.Connection, health_settings: Settings, recorded_events: list[dict[str, Any]]
) -> None:
    assert store_and_alert(build_report(health_settings)) == []
    db.execute("UPDATE backups SET finished_at = now() - interval '60 hours'")
    assert store_and_alert(build_report(health_settings)) == ["backups"]
    assert store_and_alert(build_report(health_settings)) == []
    db.execute("UPDATE backups SET finished_at = now()")
    assert store_and_alert(build_report(health_settings)) == ["backups"]
    sentry_sdk.flush()
    messages = [(e["level"], e.get("message") or e["logentry"]["message"]) for e in recorded_events]
    assert messages == [
        ("error", "fleet health: backups is unhealthy"),
        ("info", "fleet health: backups recovered to healthy"),
    ]
    stored = db.execute("SELECT count(*) FROM health_checks WHERE check_name = 'fleet:backups'").fetchone()[0]
    assert stored == 4


def test_fleet_health_exits_non_zero_when_unhealthy(
    service: str, db: psycopg.Connection, fleet_env: dict[str, str]
) -> None:
    import subprocess
    import sys

    from tests.support.processes import ROOT

    env = {**fleet_env, "FLEET_YCLIENTS__COMPANY_IDS": f"[{COMPANY}]"}
    healthy = subprocess.run(
        [sys.executable, "-m", "workers.cli", "health"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "fleet: healthy" in healthy.stdout
    db.execute("DELETE FROM health_checks WHERE check_name = 'heartbeat'")
    down = subprocess.run(
        [sys.executable, "-m", "workers.cli", "health"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 1
    assert "heartbeat  unhealthy no heartbeat recorded yet" in down.stdout


def test_with_a_token_only_bearer_requests_are_answered_and_a_stalled_client_is_dropped(
    db: psycopg.Connection, fleet_env: dict[str, str]
) -> None:
    import socket

    settings = load_settings(health={"token": "h3alth-token", "request_timeout_seconds": 0.5})
    open_process_pool(role="test", max_size=2, wait=True)
    try:
        with make_server(settings, port=0).running() as server:
            url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
            assert get(url)[0] == 401
            wrong = urllib.request.Request(url, headers={"Authorization": "Bearer nope"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(wrong, timeout=5)
            assert refused.value.code == 401
            right = urllib.request.Request(url, headers={"Authorization": "Bearer h3alth-token"})
            with urllib.request.urlopen(right, timeout=10) as response:
                assert response.status == 200
            stalled = socket.create_connection(server.server_address[:2])
            stalled.sendall(b"GET /health HTTP/1.1\r\n")  # and never the rest
            stalled.settimeout(5)  # without the server's own timeout, recv would time out here instead
            assert stalled.recv(100) == b"", "the server closed the stalled connection"
            stalled.close()
    finally:
        close_process_pool()


def test_an_empty_token_answers_no_one_not_everyone_who_says_bearer(db: psycopg.Connection) -> None:
    """An empty line in fleet.env sets the token to nothing: the door closes (the HTTP server strips the space of
    `Bearer `, so the check itself is asked too: whatever reaches it, it never compares against `Bearer `)."""
    settings = load_settings(health={"token": ""})
    assert not authorized(settings, "Bearer ")
    assert not authorized(settings, None)
    open_process_pool(role="test", max_size=2, wait=True)
    try:
        with make_server(settings, port=0).running() as server:
            url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
            assert get(url)[0] == 401
            empty_bearer = urllib.request.Request(url, headers={"Authorization": "Bearer "})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(empty_bearer, timeout=5)
            assert refused.value.code == 401
    finally:
        close_process_pool()
