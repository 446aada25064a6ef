"""Tasks of the YClients worker type: one entity of one company per task, fanned out by beat; the CRM
operations that carry chat bookings into YClients; the targeted syncs that webhooks ask for."""

from __future__ import annotations

import logging
from typing import Any, Literal

from shared.core.failure import is_retryable
from shared.core.resources import resource
from shared.core.settings import get_settings
from shared.core.topology import TaskName
from shared.data.models import PositiveId, ServedCompanyId
from shared.data.repositories.crm_operations import CrmOperationRepository
from shared.yclients.client import YClientsClient, make_client
from shared.yclients.push import Pushed, push
from shared.yclients.reconcile import reconcile
from shared.yclients.sync import ENTITIES, SyncFailedError, sync_entity
from shared.yclients.webhooks import Applied, apply_event, drive_due_events
from workers.app import app
from workers.base import FleetTask
from workers.crm_lane import long_task_turn
from workers.ping import define_ping, define_report

log = logging.getLogger(__name__)
SyncMode = Literal["full", "incremental"]
ping = define_ping(TaskName.YCLIENTS_PING)
report_process = define_report(TaskName.YCLIENTS_REPORT)


def yclients_client() -> YClientsClient:
    """One API client per worker child, made after fork on first use, closed at child shutdown."""
    return resource("yclients", lambda: make_client(get_settings()), YClientsClient.close)


@app.task(
    name=TaskName.SYNC_ENTITY.value,
    bind=True,
    max_retries=3,
    reject_on_worker_lost=True,
    retry_backoff_base=60,
    retry_backoff_max=600,
)
def sync_entity_task(
    self: FleetTask, entity: str, company_id: ServedCompanyId, mode: SyncMode | None = None
) -> dict[str, Any]:
    """Sync one entity of one company; a run already going for the same pair is not started twice. No row counts
    the tries (the journal records pages, not attempts), so the task's own policy does. A `partial` run (it read
    less than YClients claimed) is returned, not retried: a server that repeats or empties its pages would most
    likely do it again at once; the health report warns with its figures, and the next scheduled run reads again."""
    settings = get_settings()
    # Waits (deferred, not failed) while the worker's sync slots are taken: a child stays free for bookings.
    turn = long_task_turn(self, f"fleet:sync:{company_id}:{entity}", settings.workers.yclients.time_limit)
    if turn is None:
        log.info("sync %s for company %s is already running or waiting; skipped", entity, company_id)
        return {"status": "skipped"}
    try:
        summary = sync_entity(yclients_client(), settings.yclients, company_id, entity, mode=mode)
    except SyncFailedError as exc:
        if is_retryable(exc.__cause__):
            self.retry_later(exc)  # resumes after the last saved page
        raise
    finally:
        turn.end()
    c = summary.counters
    return {
        "status": summary.status,
        "error": summary.error,
        "run_id": summary.run_id,
        "pages": c.pages,
        "fetched": c.fetched,
        "upserted": c.upserted,
        "unchanged": c.unchanged,
        "marked_deleted": c.marked_deleted,
        "rejected": c.rejected,
        "pending": c.pending,
        "deletion": c.deletion,
    }


@app.task(name=TaskName.SYNC_ALL.value)
def sync_all(entity: str, mode: SyncMode | None = None) -> int:
    """Beat's entry point: one sync task per configured company."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}")
    companies = get_settings().yclients.company_ids
    for company_id in companies:
        sync_entity_task.delay(entity, company_id, mode)
    return len(companies)


def _hand_on(outbox_ids: list[int]) -> None:
    """Replies the YClients worker wrote go out through the inbound worker's delivery."""
    for outbox_id in outbox_ids:
        app.send_task(TaskName.DELIVER_REPLY, (outbox_id,))


@app.task(
    name=TaskName.PUSH_BOOKING.value,
    bind=True,
    reject_on_worker_lost=True,
    max_retries=None,
    dead_letter_on_failure=True,
)
def push_booking(self: FleetTask, operation_id: PositiveId) -> str:
    """Carry one CRM operation out (create, move or delete a record); the same booking's next one follows."""
    result = push(operation_id, yclients_client(), get_settings())
    _hand_on(result.outbox_ids)
    if result.outcome is Pushed.RETRY:
        self.retry_when_due(result.retry_in)  # the sweep re-drives the operation if this retry is lost
    if result.following is not None:
        push_booking.delay(result.following)
    return result.outcome


@app.task(
    name=TaskName.APPLY_WEBHOOK.value,
    bind=True,
    reject_on_worker_lost=True,
    max_retries=None,
    dead_letter_on_failure=True,
)
def apply_webhook(self: FleetTask, event_id: PositiveId) -> str:
    """The targeted sync a stored webhook asks for: its record read back and saved (or marked deleted). The event's
    row counts the attempts and gives up after `FLEET_YCLIENTS__WEBHOOK_MAX_ATTEMPTS`; the task only comes back
    when the row is due."""
    applied = apply_event(event_id, yclients_client(), get_settings().yclients)
    if applied.outcome is Applied.RETRY:
        self.retry_when_due(applied.retry_in)  # the sweep re-drives the event if this retry is lost
    return applied.note or applied.outcome


@app.task(name=TaskName.YCLIENTS_SWEEP.value)
def sweep() -> dict[str, int]:
    """Re-drive CRM operations and webhook events whose task was lost (the enqueue failed, a worker died)."""
    operations = CrmOperationRepository().due_ids(200)
    for operation_id in operations:
        push_booking.delay(operation_id)
    # Events due a minute ago (their task lost, or never sent), within each salon's reads per minute.
    events, waiting = drive_due_events(get_settings(), apply_webhook.delay)
    if operations or events or waiting:
        log.info(
            "yclients sweep re-drove %s CRM operations and %s webhook events (%s wait: their salons are over their"
            " reads)",
            len(operations),
            events,
            waiting,
        )
    return {"operations": len(operations), "webhooks": events, "webhooks_waiting": waiting}


@app.task(name=TaskName.RECONCILE_SALON.value, bind=True, reject_on_worker_lost=True)
def reconcile_salon(self: FleetTask, company_id: ServedCompanyId) -> dict[str, Any]:
    """One salon's chat bookings compared with its YClients calendar, and each disagreement repaired. It walks
    the salon's records like a sync, so it takes a long task's turn: the child kept for bookings stays free."""
    settings = get_settings()
    turn = long_task_turn(self, f"fleet:reconcile:{company_id}", settings.workers.yclients.time_limit)
    if turn is None:
        return {"status": "skipped"}
    try:
        result = reconcile(yclients_client(), settings.yclients, company_id)
    finally:
        turn.end()
    return {"checked": result.checked, "found": result.found, "repaired": result.repaired, "left": result.left}


@app.task(name=TaskName.RECONCILE_ALL.value)
def reconcile_all() -> int:
    """Beat's entry point: one reconciliation per configured company."""
    companies = get_settings().yclients.company_ids
    for company_id in companies:
        reconcile_salon.delay(company_id)
    return len(companies)
