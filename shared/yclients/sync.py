"""Keep one salon's data in PostgreSQL current with YClients, one entity at a time, every run recorded.

Rules: every page is read (paging by total_count, no cap but the one total_count implies); each row is
converted on its own, and a row that cannot be used is kept aside with its reason and raw value
(`sync_rejected_rows`) while the rest of its page is saved; a record whose staff member is not synced yet
waits in `sync_pending_records` and is tried again after the next staff or services sync; rows are upserted
in batches on YClients ids; each page's progress is committed, so a failed run keeps what it saved and the
next run resumes after its last page.

Deletion only on proof: rows gone upstream are marked deleted only after a walk that proves it saw every row
(`Walk.missing_proof`), never from an empty answer while rows exist, and never more than
`max_delete_share` of an entity unless an operator confirms it (`fleet sync ... --allow-mass-delete`).

Success only when nothing claimed is missing: a walk that read fewer rows than the server claimed (`Walk.shortfall`:
a repeated page, the page cap, fewer distinct rows than `total_count`) ends its run `partial`, with the figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sentry_sdk

from shared.alerts.delivery import deliver_quietly, raise_alert
from shared.core.settings import YClientsSettings
from shared.data.repositories.calendar import StaffScheduleRepository
from shared.data.repositories.catalogue import (
    CompanyRepository,
    ServiceCategoryRepository,
    ServiceRepository,
    StaffRepository,
)
from shared.data.repositories.people import ClientRepository
from shared.data.repositories.sync_held_rows import SyncRejectedRowRepository
from shared.data.repositories.sync_runs import SyncRunRepository
from shared.data.repositories.vanished import Vanished
from shared.yclients import rows as convert
from shared.yclients.client import Page, Walk, YClientsClient
from shared.yclients.records import RecordsSync
from shared.yclients.saving import RunCounters, convert_rows, raw_ids, save

log = logging.getLogger(__name__)

ENTITIES = ("company", "services", "staff", "schedules", "schedules_today", "clients", "records")


class UnknownEntityError(ValueError):
    pass


class MassDeleteRefusedError(RuntimeError):
    """The run would mark too much of an entity deleted: rows kept, run failed, operators alerted."""


@dataclass
class SyncSummary:
    """What one run did. `status`: "succeeded", "partial" (it read fewer rows than YClients claimed: saved what
    it read, deleted nothing, and is no success: `error` holds the figures) or "failed"."""

    run_id: int
    entity: str
    company_id: int
    mode: str
    status: str
    counters: RunCounters
    error: str | None = None

    def render(self) -> str:
        c = self.counters
        line = (
            f"sync run {self.run_id}: {self.entity} for company {self.company_id} ({self.mode}) {self.status}:"
            f" pages {c.pages}, fetched {c.fetched}, upserted {c.upserted}, unchanged {c.unchanged},"
            f" marked deleted {c.marked_deleted}, rejected {c.rejected}, pending {c.pending}"
        )
        line += f"\ndeletion: {c.deletion}" if c.deletion else ""
        return line + (f"\nerror: {self.error}" if self.error else "")


@dataclass(frozen=True)
class SyncProgress:
    """A page of a paged entity (clients, records) saved: the page's number (a resumed walk starts past 1) and
    the rows this run read, with the totals YClients' `total_count` implies when it sent one."""

    entity: str
    page: int
    pages: int | None
    rows: int
    total_rows: int | None


# ---- saving one page -----------------------------------------------------------------------------------


# ---- entities --------------------------------------------------------------------------------------------
class EntitySync(RecordsSync):
    """Runs one entity's sync for one company and records it."""

    def __init__(
        self,
        client: YClientsClient,
        settings: YClientsSettings,
        company_id: int,
        *,
        allow_mass_delete: bool = False,
        on_progress: Callable[[SyncProgress], None] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.company_id = company_id
        self.allow_mass_delete = allow_mass_delete
        self.on_progress = on_progress
        self.deadline = time.monotonic() + settings.run_deadline_seconds
        self._cursor: dict[str, Any] | None = None
        self._shortfall: str | None = None  # set by a walk that read fewer rows than the server claimed

    def zone(self) -> ZoneInfo:
        row = CompanyRepository().find_one({"id": self.company_id})
        return ZoneInfo(row["timezone_name"] if row else "Europe/Moscow")

    def run(self, entity: str, mode: str | None = None) -> SyncSummary:
        """`mode` None: records run incrementally after a first success; "full" reads (and proves) everything."""
        if entity not in ENTITIES:
            raise UnknownEntityError(f"unknown entity {entity!r}; choose one of {', '.join(ENTITIES)}")
        if mode is None:
            succeeded_before = entity == "records" and SyncRunRepository().last_success(self.company_id, entity)
            mode = "incremental" if succeeded_before else "full"
        run_id = SyncRunRepository().start(self.company_id, entity, mode)
        counters = RunCounters()
        try:
            self._steps()[entity](run_id, counters, mode)
            self._keep_held(entity, run_id, counters)
        except Exception as exc:
            self._keep_held(entity, run_id, counters)
            SyncRunRepository().save_progress(run_id, counters, self._cursor)
            SyncRunRepository().finish(run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
            log.error("sync %s for company %s failed: %s", entity, self.company_id, type(exc).__name__)
            raise SyncFailedError(
                SyncSummary(run_id, entity, self.company_id, mode, "failed", counters, f"{type(exc).__name__}: {exc}")
            ) from exc
        SyncRunRepository().save_progress(run_id, counters, None)
        if self._shortfall is not None:
            # What was read is saved and nothing was deleted, but the run cannot say it has the salon's data:
            # no success (freshness and the incremental start stay where they were), and no retry either, since
            # a server that repeats or empties its pages will most likely do it again at once.
            error = f"partial: {self._shortfall}"
            SyncRunRepository().finish(run_id, "partial", error)
            log.warning("sync %s for company %s ended %s", entity, self.company_id, error)
            return SyncSummary(run_id, entity, self.company_id, mode, "partial", counters, error)
        SyncRunRepository().finish(run_id, "succeeded", None)
        return SyncSummary(run_id, entity, self.company_id, mode, "succeeded", counters)

    def _steps(self) -> dict[str, Callable[[int, RunCounters, str], None]]:
        return {
            "company": self._sync_company,
            "services": self._sync_services,
            "staff": self._sync_staff,
            "schedules": self._sync_schedules,
            "schedules_today": self._sync_schedules_today,
            "clients": self._sync_clients,
            "records": self._sync_records,
        }

    def _keep_held(self, entity: str, run_id: int, c: RunCounters) -> None:
        SyncRejectedRowRepository().keep(self.company_id, entity, run_id, c.held)
        c.held.clear()

    def _page_done(self, run_id: int, c: RunCounters, page: Page, entity: str) -> None:
        c.pages += 1
        self._cursor = {"page": page.number}
        self._keep_held(entity, run_id, c)
        SyncRunRepository().save_progress(run_id, c, self._cursor)
        if self.on_progress is not None:
            total = page.total_count
            pages = -(-total // self.settings.page_size) if total is not None else None
            self.on_progress(SyncProgress(entity, page.number, pages, c.fetched, total))

    # deletion, only on proof ------------------------------------------------------------------------
    def _delete_vanished(
        self, c: RunCounters, vanished: Vanished, *, listed: int, proof_missing: str | None, unidentified: int = 0
    ) -> None:
        """Mark rows the answer no longer lists, if the walk proves they are gone and the share is believable."""
        if proof_missing is None and unidentified:
            proof_missing = f"{unidentified} listed row(s) had no usable id and may be any of the stored ones"
        if proof_missing is not None:
            c.deletion = f"skipped: {proof_missing}"
            return
        live, gone = vanished.counts()
        share = gone / live if live else 0.0
        empty_answer = listed == 0 and gone > 0
        too_many = gone >= self.settings.mass_delete_min_rows and share > self.settings.max_delete_share
        if (empty_answer or too_many) and not self.allow_mass_delete:
            reason = (
                f"refused to mark {gone} of {live} {vanished.table} rows deleted ({share:.0%},"
                f" limit {self.settings.max_delete_share:.0%})"
                + ("; the answer listed none" if empty_answer else "")
                + "; rows kept. If the salon really removed them: fleet sync ... --allow-mass-delete"
            )
            c.deletion = reason
            with sentry_sdk.new_scope() as scope:
                scope.set_tag("component", "yclients_sync")
                scope.set_tag("table", vanished.table)
                scope.set_tag("company_id", str(self.company_id))
                sentry_sdk.capture_message(f"mass delete refused: {vanished.table}", level="error")
            raise_alert(  # once per refusal of these figures: the same refusal at the next run is not news
                f"mass_delete:{self.company_id}:{vanished.table}:{gone}:{live}",
                "mass_delete",
                f"🔴 YClients sync of company {self.company_id}: {reason}",
            )
            deliver_quietly()
            raise MassDeleteRefusedError(reason)
        c.marked_deleted += vanished.mark()
        c.deletion = f"marked {gone} of {live} deleted" if gone else None

    # company --------------------------------------------------------------------------------------
    def _sync_company(self, run_id: int, c: RunCounters, mode: str) -> None:
        raw = self.client.company(self.company_id)
        c.pages, c.fetched = 1, 1
        save(CompanyRepository(), convert_rows([raw], convert.company, c, 0), c)

    # services (with their categories) -------------------------------------------------------------
    def _sync_services(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        categories = self.client.service_categories(self.company_id)
        services = self.client.services(self.company_id)
        c.pages, c.fetched = 2, len(categories) + len(services)
        saved_categories = save(
            ServiceCategoryRepository(),
            convert_rows(categories, lambda r: convert.category(self.company_id, r), c, 0),
            c,
            returning=True,
        )
        known = {row["id"] for row in saved_categories}
        converted = convert_rows(services, lambda r: convert.service(self.company_id, r), c, 0)
        for row in converted:
            if row["category_id"] not in known:
                row["category_id"] = None  # a category YClients did not list: keep the service, drop the link
        save(ServiceRepository(), converted, c)
        SyncRejectedRowRepository().clear(self.company_id, "services", [row["id"] for row in converted])
        service_ids, category_ids = raw_ids(services), raw_ids(categories)
        self._delete_vanished(
            c,
            Vanished(ServiceRepository(), {"company_id": self.company_id}, ("id",), service_ids),
            listed=len(services),
            proof_missing=None,
            unidentified=len(services) - len(service_ids),
        )
        self._delete_vanished(
            c,
            Vanished(ServiceCategoryRepository(), {"company_id": self.company_id}, ("id",), category_ids),
            listed=len(categories),
            proof_missing=None,
            unidentified=len(categories) - len(category_ids),
        )
        self._retry_pending_records(c)

    # staff ----------------------------------------------------------------------------------------
    def _sync_staff(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        staff = self.client.staff(self.company_id)
        c.pages, c.fetched = 1, len(staff)
        converted = convert_rows(staff, lambda r: convert.staff(self.company_id, r), c, 0)
        save(StaffRepository(), converted, c)
        SyncRejectedRowRepository().clear(self.company_id, "staff", [row["id"] for row in converted])
        staff_ids = raw_ids(staff)
        self._delete_vanished(
            c,
            Vanished(StaffRepository(), {"company_id": self.company_id}, ("id",), staff_ids),
            listed=len(staff),
            proof_missing=None,
            unidentified=len(staff) - len(staff_ids),
        )
        self._retry_pending_records(c)

    # schedules ------------------------------------------------------------------------------------
    def _sync_schedules(self, run_id: int, c: RunCounters, mode: str, days: int | None = None) -> None:
        staff_ids = [row["id"] for row in StaffRepository().bookable(self.company_id)]
        if not staff_ids:
            return
        today = datetime.now(self.zone()).date()
        last = today + timedelta(days=(days or self.settings.schedule_days_ahead) - 1)
        raw = self.client.schedules(self.company_id, today.isoformat(), last.isoformat(), staff_ids)
        c.pages, c.fetched = 1, len(raw)
        known_staff = set(staff_ids)
        converted = []
        for index, row in enumerate(convert_rows(raw, lambda r: convert.schedule(self.company_id, r), c, 0)):
            if row["staff_id"] in known_staff:
                converted.append(row)
            else:
                c.reject(index, "staff_id: not a bookable staff member", row["staff_id"])
        saved = save(StaffScheduleRepository(), converted, c, returning=True)
        vanished = Vanished(
            StaffScheduleRepository(),
            {"company_id": self.company_id, "staff_id__in": staff_ids, "date__gte": today, "date__lte": last},
            ("staff_id", "date"),
            [(row["staff_id"], row["date"]) for row in saved],
        )
        self._delete_vanished(c, vanished, listed=len(raw), proof_missing=None)

    def _sync_schedules_today(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._sync_schedules(run_id, c, mode, days=1)

    # clients --------------------------------------------------------------------------------------
    def sync_client(self, client_id: int) -> str:
        """One client, as a webhook names it, read back from the API and saved like a page row. A client gone
        upstream is left for the nightly full walk, the only run that may judge deletions."""
        raw = self.client.one(f"client/{self.company_id}/{client_id}")
        if raw is None:
            return "absent"
        counters = RunCounters()
        rows = convert_rows([raw], lambda r: convert.client(self.company_id, r, self.zone()), counters, 0)
        save(ClientRepository(), rows, counters, conflict=("company_id", "yclients_id"))
        SyncRejectedRowRepository().keep(self.company_id, "clients", None, counters.held)
        return "saved" if rows else "rejected"

    def _sync_clients(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        zone = self.zone()
        start_page = SyncRunRepository().resume_page(self.company_id, "clients", run_id)
        seen: list[int] = []
        walk = Walk()
        for page in self.client.client_pages(self.company_id, start_page=start_page, walk=walk, deadline=self.deadline):
            rows = convert_rows(page.rows, lambda r: convert.client(self.company_id, r, zone), c, c.fetched)
            c.fetched += len(page.rows)
            save(ClientRepository(), rows, c, conflict=("company_id", "yclients_id"))
            SyncRejectedRowRepository().clear(self.company_id, "clients", [row["yclients_id"] for row in rows])
            seen += raw_ids(page.rows)
            self._page_done(run_id, c, page, "clients")
        self._cursor = None  # the walk is over: a failure from here on is not resumed past the last page
        self._shortfall = walk.shortfall()
        self._delete_vanished(
            c,
            Vanished(ClientRepository(), {"company_id": self.company_id}, ("yclients_id",), seen),
            listed=c.fetched,
            proof_missing=walk.missing_proof(),
            unidentified=c.fetched - len(seen),
        )

    def _require_company(self) -> None:
        if CompanyRepository().find_one({"id": self.company_id}) is None:
            self._sync_company(0, RunCounters(), "full")


class SyncFailedError(RuntimeError):
    """A sync run failed; `summary` holds what it did before failing (also saved in sync_runs)."""

    def __init__(self, summary: SyncSummary) -> None:
        super().__init__(summary.render())
        self.summary = summary


def sync_entity(
    client: YClientsClient,
    settings: YClientsSettings,
    company_id: int,
    entity: str,
    *,
    mode: str | None = None,
    allow_mass_delete: bool = False,
    on_progress: Callable[[SyncProgress], None] | None = None,
) -> SyncSummary:
    """One run; `on_progress` is told each page of a paged entity as it is saved (the CLI draws it)."""
    sync = EntitySync(client, settings, company_id, allow_mass_delete=allow_mass_delete, on_progress=on_progress)
    return sync.run(entity, mode)


def sync_record(client: YClientsClient, settings: YClientsSettings, company_id: int, record_id: int) -> str:
    """The targeted sync a webhook asks for: one record read back and saved, or marked deleted if gone."""
    return EntitySync(client, settings, company_id).sync_record(record_id)


def sync_staff_day(
    client: YClientsClient, settings: YClientsSettings, company_id: int, staff_id: int, day: date
) -> int:
    return EntitySync(client, settings, company_id).sync_staff_day(staff_id, day)


def sync_client(client: YClientsClient, settings: YClientsSettings, company_id: int, client_id: int) -> str:
    """The targeted sync a webhook about a client asks for."""
    return EntitySync(client, settings, company_id).sync_client(client_id)
