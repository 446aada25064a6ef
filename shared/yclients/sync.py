"""Keep one salon's data in PostgreSQL current with YClients, one entity at a time, every run recorded.

Rules: every page is read (paging by total_count, no cap); rows are validated and a bad row is reported
and skipped while the rest of its page is saved; rows are upserted in batches on YClients ids; rows gone
upstream are marked deleted, only after a run that saw every page; each page's progress is committed, so a
failed run keeps what it saved and the next run resumes after its last page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb

from shared.db import run, transaction
from shared.errors import ConflictError, ConstraintError, ForeignKeyError
from shared.repositories.calendar import BookingRepository, StaffScheduleRepository
from shared.repositories.catalogue import (
    CompanyRepository,
    ServiceCategoryRepository,
    ServiceRepository,
    StaffRepository,
)
from shared.repositories.people import ClientRepository
from shared.repository import Repository, Row
from shared.settings import YClientsSettings
from shared.yclients import rows as convert
from shared.yclients.client import Page, YClientsClient

log = logging.getLogger(__name__)

ENTITIES = ("company", "services", "staff", "schedules", "schedules_today", "clients", "records")
REJECTIONS_KEPT = 50
RESUME_WITHIN = timedelta(hours=24)


class UnknownEntityError(ValueError):
    pass


@dataclass
class RunCounters:
    pages: int = 0
    fetched: int = 0
    upserted: int = 0
    marked_deleted: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, index: int, reason: str, reference: Any = None) -> None:
        self.rejected += 1
        if len(self.rejections) < REJECTIONS_KEPT:
            self.rejections.append({"row": index, "id": reference, "reason": reason})


@dataclass
class SyncSummary:
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
            f" pages {c.pages}, fetched {c.fetched}, upserted {c.upserted},"
            f" marked deleted {c.marked_deleted}, rejected {c.rejected}"
        )
        return line + (f"\nerror: {self.error}" if self.error else "")


# ---- the sync_runs journal ----------------------------------------------------------------------------
def _start_run(company_id: int, entity: str, mode: str) -> int:
    return run(
        "INSERT INTO sync_runs (company_id, entity, mode) VALUES (%s, %s, %s) RETURNING id",
        (company_id, entity, mode),
        table="sync_runs",
        operation="insert",
    )[0]["id"]


def _save_progress(run_id: int, c: RunCounters, cursor: dict[str, Any] | None) -> None:
    run(
        "UPDATE sync_runs SET pages = %s, rows_fetched = %s, rows_upserted = %s, rows_marked_deleted = %s,"
        " rows_rejected = %s, rejections = %s, cursor = %s WHERE id = %s",
        (
            c.pages,
            c.fetched,
            c.upserted,
            c.marked_deleted,
            c.rejected,
            Jsonb(c.rejections),
            Jsonb(cursor) if cursor is not None else None,
            run_id,
        ),
        table="sync_runs",
        operation="update",
    )


def _finish_run(run_id: int, status: str, error: str | None) -> None:
    run(
        "UPDATE sync_runs SET status = %s, error = %s, finished_at = now() WHERE id = %s",
        (status, error, run_id),
        table="sync_runs",
        operation="update",
    )


def _resume_page(company_id: int, entity: str, current_run: int) -> int:
    """The page after the last one the previous run saved, when that run failed recently; else 1."""
    rows = run(
        "SELECT status, cursor, started_at FROM sync_runs WHERE company_id = %s AND entity = %s AND id <> %s"
        " ORDER BY started_at DESC, id DESC LIMIT 1",
        (company_id, entity, current_run),
        table="sync_runs",
        operation="select",
    )
    if not rows or rows[0]["status"] != "failed" or not rows[0]["cursor"]:
        return 1
    if datetime.now(UTC) - rows[0]["started_at"] > RESUME_WITHIN:
        return 1
    return int(rows[0]["cursor"].get("page", 0)) + 1


def last_success(company_id: int, entity: str) -> datetime | None:
    rows = run(
        "SELECT max(started_at) AS at FROM sync_runs WHERE company_id = %s AND entity = %s AND status = 'succeeded'",
        (company_id, entity),
        table="sync_runs",
        operation="select",
    )
    return rows[0]["at"] if rows else None


# ---- saving one page -----------------------------------------------------------------------------------
def _convert_rows(
    raw_rows: Iterable[Any], conv: Callable[[dict[str, Any]], Row], c: RunCounters, offset: int
) -> list[Row]:
    out: list[Row] = []
    for index, raw in enumerate(raw_rows, offset):
        reference = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(raw, dict):
            c.reject(index, "row is not an object")
            continue
        try:
            out.append(conv(raw))
        except convert.RowError as exc:
            c.reject(index, str(exc), reference)
    return out


def _save(
    repo: Repository,
    rows: list[Row],
    c: RunCounters,
    *,
    conflict: tuple[str, ...] | None = None,
    returning: bool = False,
) -> list[Row]:
    """Validate and upsert a page; rows the model or the database refuse are reported, the rest saved.

    Without `returning`, the page goes through COPY and one merge (the fast path for clients and records).
    """
    valid, rejected = repo.validate_many(rows)
    for index, errors in rejected:
        reference = rows[index].get("id") or rows[index].get("yclients_id")
        c.reject(index, "; ".join(f"{name}: {problem}" for name, problem in errors), reference)
    if not valid:
        return []
    try:
        with transaction():
            if returning:
                saved = repo.bulk_upsert(valid, conflict=conflict, validated=True)
                c.upserted += saved.changed
                return list(saved)
            c.upserted += repo.copy_upsert(valid, conflict=conflict, validated=True)
            return []
    except (ConflictError, ForeignKeyError, ConstraintError):
        pass  # one row spoils the batch: save them one by one to find it
    saved_rows: list[Row] = []
    for row in valid:
        reference = row.get("yclients_id") or row.get("id")
        try:
            with transaction():
                result = repo.bulk_upsert([row], conflict=conflict, validated=True)
            c.upserted += result.changed
            saved_rows.extend(result)
        except ConflictError as exc:
            c.reject(-1, f"conflicts with a stored row ({exc.constraint})", reference)
        except ForeignKeyError as exc:
            c.reject(-1, f"refers to a row that is not synced ({exc.constraint})", reference)
        except ConstraintError as exc:
            c.reject(-1, f"refused by the database ({exc.constraint})", reference)
    return saved_rows if returning else []


def _raw_ids(raw_rows: Iterable[Any], field: str = "id") -> list[int]:
    """Ids present upstream, including rows we rejected: a bad row has not disappeared."""
    ids = []
    for raw in raw_rows:
        if isinstance(raw, dict):
            try:
                ids.append(convert.as_int(raw, field))
            except convert.RowError:
                continue
    return ids


def _mark_deleted(
    table: str, company_id: int, key: str, seen: list[int], extra: str = "", params: tuple[Any, ...] = ()
) -> int:
    rows = run(
        f"UPDATE {table} SET deleted_at = now() WHERE company_id = %s AND deleted_at IS NULL"
        f" AND {key} IS NOT NULL AND NOT ({key} = ANY(%s)){extra} RETURNING 1",
        (company_id, seen, *params),
        table=table,
        operation="update",
    )
    return len(rows)


# ---- entities --------------------------------------------------------------------------------------------
class EntitySync:
    """Runs one entity's sync for one company and records it."""

    def __init__(self, client: YClientsClient, settings: YClientsSettings, company_id: int) -> None:
        self.client = client
        self.settings = settings
        self.company_id = company_id

    def zone(self) -> ZoneInfo:
        row = CompanyRepository().find_one({"id": self.company_id})
        return ZoneInfo(row["timezone_name"] if row else "Europe/Moscow")

    def run(self, entity: str) -> SyncSummary:
        if entity not in ENTITIES:
            raise UnknownEntityError(f"unknown entity {entity!r}; choose one of {', '.join(ENTITIES)}")
        mode = "incremental" if entity == "records" and last_success(self.company_id, entity) else "full"
        run_id = _start_run(self.company_id, entity, mode)
        counters = RunCounters()
        try:
            getattr(self, f"_sync_{entity}")(run_id, counters, mode)
        except Exception as exc:
            _save_progress(run_id, counters, self._cursor)
            _finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
            log.error("sync %s for company %s failed: %s", entity, self.company_id, type(exc).__name__)
            raise SyncFailedError(
                SyncSummary(run_id, entity, self.company_id, mode, "failed", counters, f"{type(exc).__name__}: {exc}")
            ) from exc
        _save_progress(run_id, counters, None)
        _finish_run(run_id, "succeeded", None)
        return SyncSummary(run_id, entity, self.company_id, mode, "succeeded", counters)

    _cursor: dict[str, Any] | None = None

    def _page_done(self, run_id: int, c: RunCounters, page: Page) -> None:
        c.pages += 1
        self._cursor = {"page": page.number}
        _save_progress(run_id, c, self._cursor)

    # company --------------------------------------------------------------------------------------
    def _sync_company(self, run_id: int, c: RunCounters, mode: str) -> None:
        raw = self.client.company(self.company_id)
        c.pages, c.fetched = 1, 1
        _save(CompanyRepository(), _convert_rows([raw], convert.company, c, 0), c)

    # services (with their categories) -------------------------------------------------------------
    def _sync_services(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        categories = self.client.service_categories(self.company_id)
        services = self.client.services(self.company_id)
        c.pages, c.fetched = 2, len(categories) + len(services)
        saved_categories = _save(
            ServiceCategoryRepository(),
            _convert_rows(categories, lambda r: convert.category(self.company_id, r), c, 0),
            c,
            returning=True,
        )
        known = {row["id"] for row in saved_categories}
        converted = _convert_rows(services, lambda r: convert.service(self.company_id, r), c, 0)
        for row in converted:
            if row["category_id"] not in known:
                row["category_id"] = None  # a category YClients did not list: keep the service, drop the link
        _save(ServiceRepository(), converted, c)
        c.marked_deleted += _mark_deleted("services", self.company_id, "id", _raw_ids(services))
        c.marked_deleted += _mark_deleted("service_categories", self.company_id, "id", _raw_ids(categories))

    # staff ----------------------------------------------------------------------------------------
    def _sync_staff(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        staff = self.client.staff(self.company_id)
        c.pages, c.fetched = 1, len(staff)
        _save(StaffRepository(), _convert_rows(staff, lambda r: convert.staff(self.company_id, r), c, 0), c)
        c.marked_deleted += _mark_deleted("staff", self.company_id, "id", _raw_ids(staff))

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
        for index, row in enumerate(_convert_rows(raw, lambda r: convert.schedule(self.company_id, r), c, 0)):
            if row["staff_id"] in known_staff:
                converted.append(row)
            else:
                c.reject(index, "staff_id: not a bookable staff member", row["staff_id"])
        saved = _save(StaffScheduleRepository(), converted, c, returning=True)
        c.marked_deleted += self._mark_schedules_deleted(saved, staff_ids, today, last)

    def _sync_schedules_today(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._sync_schedules(run_id, c, mode, days=1)

    def _mark_schedules_deleted(self, saved: list[Row], staff_ids: list[int], first: date, last: date) -> int:
        seen = [f"{row['staff_id']}:{row['date'].isoformat()}" for row in saved]
        rows = run(
            "UPDATE staff_schedules SET deleted_at = now() WHERE company_id = %s AND deleted_at IS NULL"
            " AND staff_id = ANY(%s) AND date BETWEEN %s AND %s"
            " AND NOT (staff_id::text || ':' || date::text = ANY(%s)) RETURNING 1",
            (self.company_id, staff_ids, first, last, seen),
            table="staff_schedules",
            operation="update",
        )
        return len(rows)

    # clients --------------------------------------------------------------------------------------
    def _sync_clients(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        zone = self.zone()
        start_page = _resume_page(self.company_id, "clients", run_id)
        seen: list[int] = []
        for page in self.client.client_pages(self.company_id, start_page=start_page):
            rows = _convert_rows(page.rows, lambda r: convert.client(self.company_id, r, zone), c, c.fetched)
            c.fetched += len(page.rows)
            _save(ClientRepository(), rows, c, conflict=("company_id", "yclients_id"))
            seen += _raw_ids(page.rows)
            self._page_done(run_id, c, page)
        if start_page == 1:  # only a run that saw every page knows what is gone
            c.marked_deleted += _mark_deleted("clients", self.company_id, "yclients_id", seen)

    # records --------------------------------------------------------------------------------------
    def _sync_records(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        zone = self.zone()
        today = datetime.now(zone).date()
        first = today - timedelta(days=self.settings.records_days_back)
        last = today + timedelta(days=self.settings.records_days_ahead)
        params: dict[str, Any] = {"start_date": first.isoformat(), "end_date": last.isoformat()}
        previous = last_success(self.company_id, "records")
        if mode == "incremental" and previous is not None:
            changed_after = previous - timedelta(minutes=self.settings.incremental_overlap_minutes)
            params["changed_after"] = changed_after.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S")
        start_page = _resume_page(self.company_id, "records", run_id)
        staff = {row["id"] for row in StaffRepository().find_many({"company_id": self.company_id})}
        services = {row["id"] for row in ServiceRepository().find_many({"company_id": self.company_id})}
        seen: list[int] = []
        for page in self.client.record_pages(self.company_id, params, start_page=start_page):
            bookings = self._bookings_of(page.rows, zone, staff, services, c, c.fetched)
            c.fetched += len(page.rows)
            _save(BookingRepository(), bookings, c, conflict=("company_id", "yclients_id"))
            seen += _raw_ids(page.rows)
            self._page_done(run_id, c, page)
        if mode == "full" and start_page == 1:
            c.marked_deleted += _mark_deleted(
                "bookings",
                self.company_id,
                "yclients_id",
                seen,
                " AND starts_at >= %s AND starts_at < %s",
                (
                    datetime.combine(first, datetime.min.time(), zone),
                    datetime.combine(last + timedelta(days=1), datetime.min.time(), zone),
                ),
            )

    def _bookings_of(
        self, raw_rows: list[Any], zone: ZoneInfo, staff: set[int], services: set[int], c: RunCounters, offset: int
    ) -> list[Row]:
        """Records as bookings, with their clients upserted first and linked by local id."""
        bookings: list[Row] = []
        clients: dict[int, Row] = {}
        for index, raw in enumerate(raw_rows, offset):
            if not isinstance(raw, dict):
                c.reject(index, "row is not an object")
                continue
            try:
                booking = convert.record(self.company_id, raw, zone)
            except convert.RowError as exc:
                c.reject(index, str(exc), raw.get("id"))
                continue
            if booking["staff_id"] not in staff:
                c.reject(index, "staff_id: unknown staff member (sync staff first)", booking["yclients_id"])
                continue
            if booking["service_id"] not in services:
                booking["service_id"] = None  # keep the record; the services list still names it
            person = raw.get("client") if isinstance(raw.get("client"), dict) else None
            if person and person.get("id"):
                try:
                    clients[convert.as_int(person, "id")] = {
                        "company_id": self.company_id,
                        "yclients_id": convert.as_int(person, "id"),
                        "name": convert.text(person, "name"),
                        "phone": _phone_or_none(person.get("phone")),
                    }
                    booking["_client"] = convert.as_int(person, "id")
                except convert.RowError:
                    pass  # the booking stands without its client link
            bookings.append(booking)
        local = {}
        if clients:
            saved = _save(
                ClientRepository(),
                list(clients.values()),
                RunCounters(),
                conflict=("company_id", "yclients_id"),
                returning=True,
            )
            local = {row["yclients_id"]: row["id"] for row in saved}
        for booking in bookings:
            booking["client_id"] = local.get(booking.pop("_client", None))
        return bookings

    def _require_company(self) -> None:
        if CompanyRepository().find_one({"id": self.company_id}) is None:
            self._sync_company(0, RunCounters(), "full")


def _phone_or_none(value: Any) -> str | None:
    try:
        return convert.as_phone(value)
    except convert.RowError:
        return None


class SyncFailedError(RuntimeError):
    """A sync run failed; `summary` holds what it did before failing (also saved in sync_runs)."""

    def __init__(self, summary: SyncSummary) -> None:
        super().__init__(summary.render())
        self.summary = summary


def sync_entity(client: YClientsClient, settings: YClientsSettings, company_id: int, entity: str) -> SyncSummary:
    return EntitySync(client, settings, company_id).run(entity)
