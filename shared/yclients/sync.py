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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sentry_sdk

from shared.core.db import transaction
from shared.core.settings import YClientsSettings
from shared.data.errors import ConflictError, DataLayerError, ForeignKeyError, TransientError
from shared.data.repositories import sync_held_rows as held_rows
from shared.data.repositories import sync_runs
from shared.data.repositories.calendar import BookingRepository, StaffScheduleRepository
from shared.data.repositories.catalogue import (
    CompanyRepository,
    ServiceCategoryRepository,
    ServiceRepository,
    StaffRepository,
)
from shared.data.repositories.people import ClientRepository
from shared.data.repositories.vanished import Vanished, by_key
from shared.data.repository import Repository, Row
from shared.yclients import rows as convert
from shared.yclients.client import Page, Walk, YClientsClient

log = logging.getLogger(__name__)

ENTITIES = ("company", "services", "staff", "schedules", "schedules_today", "clients", "records")
REJECTIONS_KEPT = 50


class UnknownEntityError(ValueError):
    pass


class MassDeleteRefusedError(RuntimeError):
    """The run would mark too much of an entity deleted: rows kept, run failed, operators alerted."""


@dataclass
class RunCounters:
    pages: int = 0
    fetched: int = 0
    upserted: int = 0
    marked_deleted: int = 0
    rejected: int = 0
    pending: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    deletion: str | None = None
    held: list[tuple[Any, str]] = field(default_factory=list)  # (raw row, reason), kept at the page's end

    def reject(self, index: int, reason: str, reference: Any = None, raw: Any = None) -> None:
        self.rejected += 1
        if len(self.rejections) < REJECTIONS_KEPT:
            self.rejections.append({"row": index, "id": _short(reference), "reason": reason})
        self.held.append((raw if raw is not None else {"id": reference}, reason))


def _short(reference: Any) -> Any:
    """The row's id as the journal can hold it: a bigint, a short string, or a note that it was unusable."""
    if reference is None or (
        isinstance(reference, int) and not isinstance(reference, bool) and reference.bit_length() <= 63
    ):
        return reference
    if isinstance(reference, str):
        return reference[:40]
    return "<unusable>"


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
            f" marked deleted {c.marked_deleted}, rejected {c.rejected}, pending {c.pending}"
        )
        line += f"\ndeletion: {c.deletion}" if c.deletion else ""
        return line + (f"\nerror: {self.error}" if self.error else "")


# ---- saving one page -----------------------------------------------------------------------------------
def _convert_rows(
    raw_rows: Iterable[Any], conv: Callable[[dict[str, Any]], Row], c: RunCounters, offset: int
) -> list[Row]:
    out: list[Row] = []
    for index, raw in enumerate(raw_rows, offset):
        converted = _convert_one(raw, conv, c, index)
        if converted is not None:
            out.append(converted)
    return out


def _convert_one(raw: Any, conv: Callable[[dict[str, Any]], Row], c: RunCounters, index: int) -> Row | None:
    """One row, on its own: whatever is wrong with it is that row's rejection, never its page's failure."""
    if not isinstance(raw, dict):
        c.reject(index, "row is not an object", None, raw)
        return None
    try:
        return conv(raw)
    except convert.RowError as exc:
        c.reject(index, str(exc), raw.get("id"), raw)
    except Exception as exc:  # noqa: BLE001  (any value the converters did not foresee rejects its row only)
        c.reject(index, f"unusable value ({type(exc).__name__})", raw.get("id"), raw)
    return None


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
    except TransientError:
        raise
    except DataLayerError:
        pass  # one row spoils the batch: save them one by one to find it
    saved_rows: list[Row] = []
    for row in valid:
        reference = row.get("yclients_id") or row.get("id")
        try:
            with transaction():
                result = repo.bulk_upsert([row], conflict=conflict, validated=True)
            c.upserted += result.changed
            saved_rows.extend(result)
        except TransientError:
            raise
        except ConflictError as exc:
            c.reject(-1, f"conflicts with a stored row ({exc.constraint})", reference, _plain(row))
        except ForeignKeyError as exc:
            c.reject(-1, f"refers to a row that is not synced ({exc.constraint})", reference, _plain(row))
        except DataLayerError as exc:
            what = getattr(exc, "constraint", None) or getattr(exc, "sqlstate", None) or type(exc).__name__
            c.reject(-1, f"refused by the database ({what})", reference, _plain(row))
    return saved_rows if returning else []


def _plain(row: Row) -> dict[str, Any]:
    return {key: value for key, value in row.items() if not key.startswith("_")}


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


# ---- entities --------------------------------------------------------------------------------------------
class EntitySync:
    """Runs one entity's sync for one company and records it."""

    def __init__(
        self,
        client: YClientsClient,
        settings: YClientsSettings,
        company_id: int,
        *,
        allow_mass_delete: bool = False,
    ) -> None:
        self.client = client
        self.settings = settings
        self.company_id = company_id
        self.allow_mass_delete = allow_mass_delete
        self.deadline = time.monotonic() + settings.run_deadline_seconds
        self._cursor: dict[str, Any] | None = None

    def zone(self) -> ZoneInfo:
        row = CompanyRepository().find_one({"id": self.company_id})
        return ZoneInfo(row["timezone_name"] if row else "Europe/Moscow")

    def run(self, entity: str, mode: str | None = None) -> SyncSummary:
        """`mode` None: records run incrementally after a first success; "full" reads (and proves) everything."""
        if entity not in ENTITIES:
            raise UnknownEntityError(f"unknown entity {entity!r}; choose one of {', '.join(ENTITIES)}")
        if mode is None:
            mode = "incremental" if entity == "records" and sync_runs.last_success(self.company_id, entity) else "full"
        run_id = sync_runs.start_run(self.company_id, entity, mode)
        counters = RunCounters()
        try:
            getattr(self, f"_sync_{entity}")(run_id, counters, mode)
            self._keep_held(entity, run_id, counters)
        except Exception as exc:
            self._keep_held(entity, run_id, counters)
            sync_runs.save_progress(run_id, counters, self._cursor)
            sync_runs.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
            log.error("sync %s for company %s failed: %s", entity, self.company_id, type(exc).__name__)
            raise SyncFailedError(
                SyncSummary(run_id, entity, self.company_id, mode, "failed", counters, f"{type(exc).__name__}: {exc}")
            ) from exc
        sync_runs.save_progress(run_id, counters, None)
        sync_runs.finish_run(run_id, "succeeded", None)
        return SyncSummary(run_id, entity, self.company_id, mode, "succeeded", counters)

    def _keep_held(self, entity: str, run_id: int, c: RunCounters) -> None:
        held_rows.keep_rejected(self.company_id, entity, run_id, c.held)
        c.held.clear()

    def _page_done(self, run_id: int, c: RunCounters, page: Page, entity: str) -> None:
        c.pages += 1
        self._cursor = {"page": page.number}
        self._keep_held(entity, run_id, c)
        sync_runs.save_progress(run_id, c, self._cursor)

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
            raise MassDeleteRefusedError(reason)
        c.marked_deleted += vanished.mark()
        c.deletion = f"marked {gone} of {live} deleted" if gone else None

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
        held_rows.clear_rejected(self.company_id, "services", [row["id"] for row in converted])
        service_ids, category_ids = _raw_ids(services), _raw_ids(categories)
        self._delete_vanished(
            c,
            by_key("services", self.company_id, "id", service_ids),
            listed=len(services),
            proof_missing=None,
            unidentified=len(services) - len(service_ids),
        )
        self._delete_vanished(
            c,
            by_key("service_categories", self.company_id, "id", category_ids),
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
        converted = _convert_rows(staff, lambda r: convert.staff(self.company_id, r), c, 0)
        _save(StaffRepository(), converted, c)
        held_rows.clear_rejected(self.company_id, "staff", [row["id"] for row in converted])
        staff_ids = _raw_ids(staff)
        self._delete_vanished(
            c,
            by_key("staff", self.company_id, "id", staff_ids),
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
        for index, row in enumerate(_convert_rows(raw, lambda r: convert.schedule(self.company_id, r), c, 0)):
            if row["staff_id"] in known_staff:
                converted.append(row)
            else:
                c.reject(index, "staff_id: not a bookable staff member", row["staff_id"])
        saved = _save(StaffScheduleRepository(), converted, c, returning=True)
        seen = [f"{row['staff_id']}:{row['date'].isoformat()}" for row in saved]
        vanished = Vanished(
            "staff_schedules",
            "company_id = %s AND deleted_at IS NULL AND staff_id = ANY(%s) AND date BETWEEN %s AND %s",
            (self.company_id, staff_ids, today, last),
            "NOT (staff_id::text || ':' || date::text = ANY(%s))",
            (seen,),
        )
        self._delete_vanished(c, vanished, listed=len(raw), proof_missing=None)

    def _sync_schedules_today(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._sync_schedules(run_id, c, mode, days=1)

    # clients --------------------------------------------------------------------------------------
    def _sync_clients(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        zone = self.zone()
        start_page = sync_runs.resume_page(self.company_id, "clients", run_id)
        seen: list[int] = []
        walk = Walk()
        for page in self.client.client_pages(self.company_id, start_page=start_page, walk=walk, deadline=self.deadline):
            rows = _convert_rows(page.rows, lambda r: convert.client(self.company_id, r, zone), c, c.fetched)
            c.fetched += len(page.rows)
            _save(ClientRepository(), rows, c, conflict=("company_id", "yclients_id"))
            held_rows.clear_rejected(self.company_id, "clients", [row["yclients_id"] for row in rows])
            seen += _raw_ids(page.rows)
            self._page_done(run_id, c, page, "clients")
        self._cursor = None  # the walk is over: a failure from here on is not resumed past the last page
        self._delete_vanished(
            c,
            by_key("clients", self.company_id, "yclients_id", seen),
            listed=c.fetched,
            proof_missing=walk.missing_proof(),
            unidentified=c.fetched - len(seen),
        )

    # records --------------------------------------------------------------------------------------
    def _sync_records(self, run_id: int, c: RunCounters, mode: str) -> None:
        self._require_company()
        zone = self.zone()
        today = datetime.now(zone).date()
        first = today - timedelta(days=self.settings.records_days_back)
        last = today + timedelta(days=self.settings.records_days_ahead)
        params: dict[str, Any] = {"start_date": first.isoformat(), "end_date": last.isoformat()}
        previous = sync_runs.last_success(self.company_id, "records")
        if mode == "incremental" and previous is not None:
            changed_after = previous - timedelta(minutes=self.settings.incremental_overlap_minutes)
            params["changed_after"] = changed_after.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S")
        start_page = sync_runs.resume_page(self.company_id, "records", run_id)
        seen: list[int] = []
        walk = Walk()
        pages = self.client.record_pages(
            self.company_id, params, start_page=start_page, walk=walk, deadline=self.deadline
        )
        for page in pages:
            self._save_records(page.rows, zone, c, c.fetched)
            c.fetched += len(page.rows)
            seen += _raw_ids(page.rows)
            self._page_done(run_id, c, page, "records")
        self._cursor = None  # the walk is over: a failure from here on is not resumed past the last page
        if mode != "full":
            return  # an incremental answer lists only what changed: it proves nothing about what is gone
        self._delete_vanished(
            c,
            by_key(
                "bookings",
                self.company_id,
                "yclients_id",
                seen,
                " AND starts_at >= %s AND starts_at < %s",
                (
                    datetime.combine(first, datetime.min.time(), zone),
                    datetime.combine(last + timedelta(days=1), datetime.min.time(), zone),
                ),
            ),
            listed=c.fetched,
            proof_missing=walk.missing_proof(),
            unidentified=c.fetched - len(seen),
        )

    def _save_records(self, raw_rows: list[Any], zone: ZoneInfo, c: RunCounters, offset: int) -> list[int]:
        """Convert and save records; those whose staff member is unknown wait as pending. Returns saved ids."""
        staff = {row["id"] for row in StaffRepository().find_many({"company_id": self.company_id})}
        services = {row["id"] for row in ServiceRepository().find_many({"company_id": self.company_id})}
        pending: list[tuple[int, str, Any]] = []
        bookings = self._bookings_of(raw_rows, zone, staff, services, c, offset, pending)
        _save(BookingRepository(), bookings, c, conflict=("company_id", "yclients_id"))
        saved = [booking["yclients_id"] for booking in bookings]
        held_rows.clear_rejected(self.company_id, "records", saved)
        held_rows.hold_pending(self.company_id, pending)
        held_rows.release_pending(self.company_id, saved)
        c.pending += len(pending)
        return saved

    def _retry_pending_records(self, c: RunCounters) -> None:
        """After staff or services change, records that waited for them are tried again."""
        waiting = held_rows.pending_records(self.company_id)
        if waiting:
            retry = RunCounters()
            saved = self._save_records(waiting, self.zone(), retry, 0)
            c.upserted += retry.upserted
            log.info(
                "pending records of company %s: %s saved, %s still waiting", self.company_id, len(saved), retry.pending
            )

    def _bookings_of(
        self,
        raw_rows: list[Any],
        zone: ZoneInfo,
        staff: set[int],
        services: set[int],
        c: RunCounters,
        offset: int,
        pending: list[tuple[int, str, Any]],
    ) -> list[Row]:
        """Records as bookings, with their clients upserted first and linked by local id."""
        bookings: list[Row] = []
        clients: dict[int, Row] = {}
        for index, raw in enumerate(raw_rows, offset):
            booking = _convert_one(raw, lambda r: convert.record(self.company_id, r, zone), c, index)
            if booking is None:
                continue
            if booking["staff_id"] not in staff:
                pending.append((booking["yclients_id"], "staff member not synced yet", raw))
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


def sync_entity(
    client: YClientsClient,
    settings: YClientsSettings,
    company_id: int,
    entity: str,
    *,
    mode: str | None = None,
    allow_mass_delete: bool = False,
) -> SyncSummary:
    return EntitySync(client, settings, company_id, allow_mass_delete=allow_mass_delete).run(entity, mode)
