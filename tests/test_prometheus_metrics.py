"""Prometheus histograms and counters gathered from every worker child and served by the health service."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.standins.gateway import gateway_stand_in
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import load_settings
from shared.health.server import answer
from shared.inbound.payload import TASK_NAME
from shared.observability import prometheus_metrics as metrics
from tests.support.processes import running_worker, wait_until
from tests.support.seed import COMPANY, chat_message, seed_salon
from workers.app import app
from workers.producer import enqueue_message


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(page: dict, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (sample, have), v in page.items() if sample == name and wanted <= set(have))


@pytest.mark.slow
def test_every_child_counts_into_the_health_services_metrics_and_replaced_children_carry_on(
    db: psycopg.Connection, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """Two inbound children, each replaced after 3 tasks: every task, statement and borrow is counted once in
    /metrics, and the metrics directory holds one file per kind and slot, not one per process that ever ran."""
    open_process_pool(role="test", max_size=2, wait=True)
    seed_salon()
    close_process_pool()
    directory = tmp_path / "state" / "metrics"
    with gateway_stand_in() as gateway:
        env = {
            **fleet_env,
            "FLEET_GATEWAY__SEND_URL": gateway.url,
            "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0",
            "FLEET_WORKERS__INBOUND__MAX_TASKS_PER_CHILD": "3",
        }
        with running_worker("inbound", env, tmp_path, concurrency=2) as worker:
            for n in range(12):
                enqueue_message(chat_message(COMPANY, f"+7911000{n:04d}", 0, "Привет"))
            app.send_task(TASK_NAME, args=[{"company_id": "not a number"}])  # a payload no salon could send
            wait_until(lambda: gateway.count() == 12, 60, "twelve replies")
            wait_until(
                lambda: db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 1, 30, "the dead letter"
            )
            time.sleep(0.5)  # the last task's postrun signal runs after its reply is out
            node = worker.node  # type: ignore[attr-defined]

    page = samples(answer(load_settings(health={"metrics_directory": str(directory)}), "/metrics")[2])
    assert value(page, "fleet_task_outcomes_total", task=TASK_NAME, outcome="succeeded") == 13
    assert value(page, "fleet_task_outcomes_total", task=TASK_NAME, outcome="dead_lettered") == 1
    assert value(page, "fleet_task_outcomes_total", task=TASK_NAME, outcome="failed") == 0
    assert value(page, "fleet_task_seconds_count", task=TASK_NAME) == 13
    assert value(page, "fleet_task_seconds_bucket", task=TASK_NAME, le="+Inf") == 13
    assert value(page, "fleet_queue_wait_seconds_count", queue="inbound") == 13
    assert value(page, "fleet_statement_seconds_count", table="messages", operation="insert") >= 12
    assert value(page, "fleet_pool_wait_seconds_count", role="inbound") >= 12
    # the fleet's health gauges are on the same page
    assert ("fleet_health_status", ()) in page

    # 13 tasks on 2 children replaced every 3 tasks: at least 5 processes ran, their files are named by slot.
    slots = {path.stem.split("_", 1)[1] for path in directory.glob("*.db")}
    assert {f"{node}-1", f"{node}-2"} <= slots <= {f"{node}-1", f"{node}-2", f"{node}-main"}, slots


def test_queue_wait_counts_from_a_delayed_tasks_due_time_and_skips_unstamped_messages() -> None:
    now = time.time()
    due = datetime.fromtimestamp(now - 2, UTC)
    delayed = {"fleet_sent_at": now - 30, "eta": due.isoformat()}
    assert metrics.observe_queue_wait("test", delayed, now) == pytest.approx(2.0)
    assert metrics.observe_queue_wait("test", {"fleet_sent_at": now - 0.25}, now) == pytest.approx(0.25)
    assert metrics.observe_queue_wait("test", {}, now) is None
    assert metrics.observe_queue_wait("test", {"fleet_sent_at": "garbage"}, now) is None
    future = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    assert metrics.observe_queue_wait("test", {"fleet_sent_at": now - 1, "eta": future}, now) == 0.0
