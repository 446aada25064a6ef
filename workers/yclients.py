"""Tasks of the YClients worker type: one entity of one company per task, fanned out by beat."""

from __future__ import annotations

import logging
from typing import Any, Literal

import redis

from shared.core.failure import is_retryable
from shared.core.resources import resource
from shared.core.settings import get_settings
from shared.data.models import PositiveId
from shared.yclients.client import YClientsClient, make_client
from shared.yclients.sync import ENTITIES, SyncFailedError, sync_entity
from workers.app import app
from workers.base import FleetTask
from workers.ping import define_ping, define_report

log = logging.getLogger(__name__)
SyncMode = Literal["full", "incremental"]
ping = define_ping(__name__)
report_process = define_report(__name__)


def yclients_client() -> YClientsClient:
    """One API client per worker child, made after fork on first use, closed at child shutdown."""
    return resource("yclients", lambda: make_client(get_settings()), YClientsClient.close)


@app.task(
    name="workers.yclients.sync_entity",
    bind=True,
    max_retries=3,
    reject_on_worker_lost=True,
    retry_backoff_base=60,
    retry_backoff_max=600,
)
def sync_entity_task(
    self: FleetTask, entity: str, company_id: PositiveId, mode: SyncMode | None = None
) -> dict[str, Any]:
    """Sync one entity of one company; a run already going for the same pair is not started twice."""
    settings = get_settings()
    lock = redis.Redis.from_url(settings.redis_url.get_secret_value()).lock(
        f"fleet:sync:{company_id}:{entity}", timeout=settings.workers.yclients.time_limit, blocking=False
    )
    if not lock.acquire():
        log.info("sync %s for company %s is already running; skipped", entity, company_id)
        return {"status": "skipped"}
    try:
        summary = sync_entity(yclients_client(), settings.yclients, company_id, entity, mode=mode)
    except SyncFailedError as exc:
        if is_retryable(exc.__cause__) and self.request.retries < self.max_retries:
            raise self.retry(countdown=self.backoff()) from exc  # resumes after the last saved page
        raise
    finally:
        lock.release()
    c = summary.counters
    return {
        "status": summary.status,
        "run_id": summary.run_id,
        "pages": c.pages,
        "fetched": c.fetched,
        "upserted": c.upserted,
        "marked_deleted": c.marked_deleted,
        "rejected": c.rejected,
        "pending": c.pending,
        "deletion": c.deletion,
    }


@app.task(name="workers.yclients.sync_all")
def sync_all(entity: str, mode: SyncMode | None = None) -> int:
    """Beat's entry point: one sync task per configured company."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}")
    companies = get_settings().yclients.company_ids
    for company_id in companies:
        sync_entity_task.delay(entity, company_id, mode)
    return len(companies)
