"""Carry one CRM operation out in YClients: create, move or delete the record of a chat booking, exactly once.

A create whose answer was lost (a timeout, a 5xx after the salon's calendar committed) has an unknown outcome,
so every attempt after the first looks the record up (by our `api_id`, else by staff, time and client phone)
and creates it only when it is proven absent. A move (PUT) and a delete are repeatable as they are. Whatever
YClients decides, the booking, the operation and what the client is told change in one transaction, under
the chat's answering lock, so a reply in flight and the outcome never cross.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import sentry_sdk

from shared.assistant import Reply, notices
from shared.assistant.tools import SalonTools
from shared.core.db import transaction
from shared.core.failure import backoff_delay
from shared.core.locks import LockClass, transaction_lock
from shared.core.settings import Settings
from shared.data.dead_letters import record_dead_letter
from shared.data.errors import DataLayerError
from shared.data.repositories.calendar import BookingRepository, SlotTakenError
from shared.data.repositories.catalogue import CompanyRepository
from shared.data.repositories.crm_operations import CrmOperationRepository, api_id, refusal
from shared.data.repositories.people import ClientRepository
from shared.data.repository import Row
from shared.inbound.outbox import write_notice
from shared.inbound.store import chat_key
from shared.yclients import rows as convert
from shared.yclients.client import RecordRefusedError, YClientsClient, YClientsError, record_gone
from shared.yclients.saving import phone_or_none
from shared.yclients.sync import sync_staff_day

log = logging.getLogger(__name__)


class Pushed(StrEnum):
    """What one attempt at an operation came to."""

    DONE = "done"  # YClients holds what the booking says
    REFUSED = "refused"  # YClients said no (the slot is taken, say): the operation is done, its outcome "refused: …"
    RETRY = "retry"  # not known yet: tried again later
    FAILED = "failed"  # given up after every attempt; kept as a dead letter, the client told
    SKIPPED = "skipped"  # not this worker's to do now: finished, leased elsewhere, or an older one first


@dataclass
class PushResult:
    outcome: Pushed
    outbox_ids: list[int] = field(default_factory=list)
    retry_in: float = 0.0  # after RETRY: seconds until the operation is due again
    following: int | None = None  # once finished: the booking's next pending operation, to push after it


@dataclass
class Job:
    """One claimed operation with everything an attempt needs."""

    op: Row
    booking: Row
    company: Row
    person: Row | None
    settings: Settings
    following: int | None = None  # set when the operation is finished: the booking's next pending one

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.company.get("timezone_name") or self.settings.timezone)

    def tools(self) -> SalonTools:
        return SalonTools(self.company, self.person or {"id": None}, datetime.now(self.zone))


def record_body(job: Job) -> dict[str, Any]:
    """The record as `POST /records` and `PUT /record` take it; never saved when the staff member is busy."""
    booking = job.booking
    person = job.person or {}
    phone = (person.get("phone") or job.op.get("chat_id") or "").lstrip("+")
    return {
        "staff_id": booking["staff_id"],
        "services": [{"id": item["id"]} for item in booking.get("services") or [] if item.get("id")],
        "client": {"phone": phone, "name": person.get("name") or ""},
        "datetime": booking["starts_at"].astimezone(job.zone).isoformat(),
        "seance_length": int((booking["ends_at"] - booking["starts_at"]).total_seconds()),
        "save_if_busy": False,
        "send_sms": False,
        "api_id": api_id(booking["id"]),
        "comment": "Запись из WhatsApp",
    }


def find_record(job: Job, client: YClientsClient) -> int | None:
    """The record an earlier attempt may have created: ours by `api_id`, or the same staff, time and phone.
    Records are read with the sync's converters, so every date and phone format YClients sends compares."""
    booking = job.booking
    day = booking["starts_at"].astimezone(job.zone).date().isoformat()
    ours = api_id(booking["id"])
    phone = phone_or_none((job.person or {}).get("phone") or job.op.get("chat_id"))
    params = {"start_date": day, "end_date": day, "staff_id": booking["staff_id"]}
    for page in client.record_pages(job.company["id"], params):
        for raw in page.rows:
            if not isinstance(raw, dict):
                continue
            try:
                seen = convert.record(booking["company_id"], raw, job.zone)
            except convert.RowError:
                continue
            if seen["deleted_at"] is not None:
                continue
            if raw.get("api_id") == ours:
                return seen["yclients_id"]
            person = raw.get("client") if isinstance(raw.get("client"), dict) else {}
            same_visit = (seen["staff_id"], seen["starts_at"]) == (booking["staff_id"], booking["starts_at"])
            if same_visit and phone and phone_or_none(person.get("phone")) == phone:
                return seen["yclients_id"]
    return None


def _record_id(data: Any) -> int:
    """The new record's id, from the record itself (`{id, ...}`) or as the public booking endpoint answers
    (`[{id, record_id, record_hash}]`, where `id` is the appointment's number in the request)."""
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data, field = data[0], "record_id"
    else:
        field = "id"
    try:
        return convert.as_int(data if isinstance(data, dict) else {}, field)  # type: ignore[return-value]
    except convert.RowError:
        # The record may exist: the next attempt looks it up instead of creating another.
        raise YClientsError(
            f"create answered without a usable record id ({type(data).__name__})", retryable=True
        ) from None


def _conclude(
    job: Job, outcome: str, *, failed: bool = False, change: Any = None, tell: str | Reply | None = None
) -> list[int]:
    """Booking change, the operation done (or, `failed`, given up with `outcome` as its reason) and the client's
    message in one transaction, under the chat's lock. The message belongs to the operation, not to the path
    that ended it: one outbox key per operation (and one more for giving up, so an operator's retry that then
    succeeds is still told), so two attempts that both reach an end tell the client once."""
    op = job.op
    outbox_ids: list[int] = []
    with transaction() as conn:
        chat = op.get("chat_id")
        if chat:
            transaction_lock(LockClass.ANSWER_CHAT, chat_key(op["company_id"], chat), table="messages", conn=conn)
        if change is not None:
            change(conn)
        operations = CrmOperationRepository()
        if failed:
            job.following = operations.give_up(op["id"], outcome, conn=conn)
        else:
            job.following = operations.finish(op["id"], outcome=outcome[:500], conn=conn)
        if chat and tell is not None:
            reply = tell if isinstance(tell, Reply) else Reply(tell)
            dialog = (reply.state, reply.data) if isinstance(tell, Reply) else None
            outbox_ids.append(
                write_notice(
                    op["company_id"], chat, outcome_key(op["id"], failed), reply.text, conn=conn, dialog=dialog
                )
            )
    return outbox_ids


def outcome_key(operation_id: int, given_up: bool = False) -> str:
    """The outbox key of what the client is told about an operation's end."""
    return f"crm:{operation_id}:given-up" if given_up else f"crm:{operation_id}"


def _linked(job: Job, record_id: int, note: str = "") -> PushResult:
    bookings = BookingRepository()
    booking = job.booking
    confirmed = notices.crm_confirmed(job.tools(), booking, "create") if booking["status"] != "cancelled" else None
    ids = _conclude(
        job,
        f"record {record_id} {note}".strip(),
        change=lambda conn: bookings.link_to_record(booking["id"], booking["company_id"], record_id, conn=conn),
        tell=confirmed,
    )
    return PushResult(Pushed.DONE, ids)


def _create(job: Job, client: YClientsClient) -> PushResult:
    booking = job.booking
    if booking["yclients_id"] is not None:
        # A webhook or the records sync saw the record first (the answer to our create was lost) and linked it:
        # the salon has accepted, and this operation is still the one to say so.
        return _linked(job, booking["yclients_id"], note="(linked already)")
    if job.op["attempts"] > 1:
        found = find_record(job, client)
        if found is not None:
            log.info("CRM create %s: record %s was made by an earlier attempt", job.op["id"], found)
            return _linked(job, found)
    if booking["status"] == "cancelled":
        return PushResult(Pushed.DONE, _conclude(job, "not created: cancelled before it reached YClients"))
    try:
        data = client.write("POST", f"records/{booking['company_id']}", record_body(job))
    except RecordRefusedError as exc:
        return _refused(job, exc, client)
    return _linked(job, _record_id(data))


def _learn_the_day(job: Job, client: YClientsClient) -> None:
    """Read the staff member's day from YClients now, so the times offered instead are really free."""
    booking = job.booking
    day = booking["starts_at"].astimezone(job.zone).date()
    try:
        sync_staff_day(client, job.settings.yclients, booking["company_id"], booking["staff_id"], day)
    except (YClientsError, DataLayerError) as exc:
        log.warning("could not refresh staff %s on %s after a refusal: %s", booking["staff_id"], day, exc)


def _refused(job: Job, exc: RecordRefusedError, client: YClientsClient) -> PushResult:
    """YClients said no to a create: the local booking is released and the client offered other times."""
    bookings = BookingRepository()
    booking = job.booking
    days, limit = job.settings.inbound.slot_days_ahead, job.settings.inbound.slots_offered

    if exc.slot_taken:
        # Released first (committed), so the salon's records of that day can be saved over its time; then the
        # day is read, and the alternatives are chosen from a calendar that knows what the salon knows.
        bookings.release(booking["id"])
        _learn_the_day(job, client)
        with transaction():
            tell: str | Reply = notices.crm_slot_taken(job.tools(), booking, days=days, limit=limit)
            ids = _conclude(job, refusal(f"slot taken: {exc}"), tell=tell)
        return PushResult(Pushed.REFUSED, ids)
    _keep_dead_letter(job, f"YClients refused the {job.op['kind']}: {exc}", "RecordRefused")
    ids = _conclude(
        job,
        refusal(str(exc)),
        change=lambda conn: bookings.release(booking["id"], conn=conn),
        tell=notices.crm_failed(job.tools(), booking, "create"),
    )
    return PushResult(Pushed.REFUSED, ids)


def updated_record(record: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`PUT /record` replaces the record with what it is sent: so the record as YClients holds it now, with only
    `changes` applied. The salon's comment, its prices and discounts per service, the client's name, the
    attendance and the labels stay what the administrators made them."""
    services = [
        {key: item[key] for key in SERVICE_FIELDS if key in item}
        for item in record.get("services") or []
        if isinstance(item, dict) and item.get("id") is not None
    ]
    person = record.get("client") if isinstance(record.get("client"), dict) else {}
    body = {key: record[key] for key in KEPT_FIELDS if record.get(key) is not None}
    body.update(
        {
            "services": services,
            "client": {key: person[key] for key in ("id", "phone", "name", "email") if person.get(key) is not None},
            "save_if_busy": False,
            "send_sms": False,
        }
    )
    body.update(changes)
    return body


# What a record read back keeps when it is sent back (everything `PUT /record` takes that the salon may have set).
KEPT_FIELDS = (
    "staff_id",
    "datetime",
    "seance_length",
    "comment",
    "attendance",
    "api_id",
    "sms_remain_hours",
    "email_remain_hours",
    "custom_fields",
    "record_labels",
    "custom_color",
)
SERVICE_FIELDS = ("id", "amount", "first_cost", "discount", "cost")


def _time_and_master(job: Job) -> dict[str, Any]:
    booking = job.booking
    return {
        "staff_id": booking["staff_id"],
        "datetime": booking["starts_at"].astimezone(job.zone).isoformat(),
        "seance_length": int((booking["ends_at"] - booking["starts_at"]).total_seconds()),
    }


def _update(job: Job, client: YClientsClient, changes: dict[str, Any]) -> bool:
    """Read the record, change only `changes`, send it back; False when the record is gone in YClients."""
    path = f"record/{job.booking['company_id']}/{job.booking['yclients_id']}"
    try:
        record = client.one(path)
    except YClientsError as exc:
        if record_gone(exc):
            return False
        raise
    if record is None or _deleted(record):
        return False  # never written back: an update could bring a deleted visit back to the salon's calendar
    try:
        answer = client.write("PUT", path, updated_record(record, changes))
    except YClientsError as exc:
        if record_gone(exc):  # deleted between the read and the write
            return False
        raise
    _check_applied(job, answer, changes)
    return True


def _check_applied(job: Job, answer: Any, changes: dict[str, Any]) -> None:
    """An update answered with success but the record as it was is not taken at its word: the client is told
    only what YClients shows. A retryable failure: the next attempt reads the record and writes again."""
    if not isinstance(answer, dict):
        return  # no record in the answer: nothing to hold it against (the reconciliation is the net)
    try:
        shown = convert.record(job.booking["company_id"], {"id": job.booking["yclients_id"], **answer}, job.zone)
    except convert.RowError:
        return
    wanted = {
        "staff_id": changes.get("staff_id", shown["staff_id"]),
        "starts_at": job.booking["starts_at"] if "datetime" in changes else shown["starts_at"],
    }
    if (shown["staff_id"], shown["starts_at"]) != (wanted["staff_id"], wanted["starts_at"]) or (
        "attendance" in changes and str(answer.get("attendance")) != str(changes["attendance"])
    ):
        raise YClientsError(
            f"record {job.booking['yclients_id']}: the update answered success, the record unchanged", retryable=True
        )


def _deleted(record: dict[str, Any]) -> bool:
    """YClients' flag as it arrives (true, 1, "1"); a flag that makes no sense is not taken for "deleted"."""
    try:
        return convert.as_bool(record.get("deleted"))
    except convert.RowError:
        return False


def _reschedule(job: Job, client: YClientsClient) -> PushResult:
    booking = job.booking
    record_id = booking["yclients_id"]
    if record_id is None:
        return PushResult(Pushed.DONE, _conclude(job, "no YClients record to move"))
    try:
        present = _update(job, client, _time_and_master(job))
    except RecordRefusedError as exc:
        return _move_back(job, exc, client)
    if not present:
        return _vanished(job, record_id)
    tell = notices.crm_confirmed(job.tools(), booking, "reschedule")
    return PushResult(Pushed.DONE, _conclude(job, f"record {record_id} moved", tell=tell))


def _vanished(job: Job, record_id: int) -> PushResult:
    """The record was deleted in YClients (its webhook lost) while the client's change was on its way: the
    booking no longer holds a time here either, and the client hears it once, with what to do next."""
    bookings = BookingRepository()
    booking = job.booking
    _keep_dead_letter(job, f"{job.op['kind']}: record {record_id} is gone in YClients", "RecordVanished")
    before = job.op.get("details") or {}
    told = dict(booking)
    if job.op["kind"] == "reschedule" and before.get("starts_at"):  # the visit the salon had is the one gone
        told.update(
            starts_at=datetime.fromisoformat(before["starts_at"]),
            ends_at=datetime.fromisoformat(before["ends_at"]),
            staff_id=before["staff_id"],
        )
    tell = notices.crm_vanished(job.tools(), told) if booking["status"] != "cancelled" else None
    ids = _conclude(
        job,
        refusal(f"record {record_id} is gone in YClients"),
        change=lambda conn: bookings.release(booking["id"], "vanished", conn=conn),
        tell=tell,
    )
    return PushResult(Pushed.REFUSED, ids)


def _put_back(job: Job) -> Row | None:
    """A move that did not reach YClients: the booking goes back to the time YClients still has. None when
    that time was taken here meanwhile (the booking stays where the chat moved it, for an administrator)."""
    before = job.op["details"]
    try:
        return BookingRepository().reschedule(
            job.booking["id"],
            datetime.fromisoformat(before["starts_at"]),
            datetime.fromisoformat(before["ends_at"]),
            staff_id=before["staff_id"],
        )
    except SlotTakenError:
        return None


def _move_back(job: Job, exc: YClientsError, client: YClientsClient) -> PushResult:
    """A refused move: the booking goes back to where YClients still has it, and the client hears why."""
    booking = job.booking
    days, limit = job.settings.inbound.slot_days_ahead, job.settings.inbound.slots_offered
    slot_taken = isinstance(exc, RecordRefusedError) and exc.slot_taken
    kept = _put_back(job)
    if kept is None:
        _keep_dead_letter(job, f"move refused ({exc}) and the old time is taken", "RecordRefused")
        tell_failed = notices.crm_failed(job.tools(), booking, "reschedule")
        return PushResult(Pushed.REFUSED, _conclude(job, refusal(f"the move: {exc}"), tell=tell_failed))
    if slot_taken:
        _learn_the_day(job, client)
    with transaction():
        if slot_taken:
            tell: str | Reply = notices.crm_slot_taken(job.tools(), booking, days=days, limit=limit, kept=kept)
        else:
            _keep_dead_letter(job, f"YClients refused the move: {exc}", "RecordRefused")
            tell = notices.crm_failed(job.tools(), kept, "reschedule")
        ids = _conclude(job, refusal(f"the move: {exc}"), tell=tell)
    return PushResult(Pushed.REFUSED, ids)


def _cancel(job: Job, client: YClientsClient) -> PushResult:
    record_id = job.booking["yclients_id"]
    if record_id is None:
        return PushResult(Pushed.DONE, _conclude(job, "no YClients record to delete"))
    try:
        client.write("DELETE", f"record/{job.booking['company_id']}/{record_id}")
    except YClientsError as exc:
        if not record_gone(exc):
            raise
        return PushResult(Pushed.DONE, _conclude(job, f"record {record_id} was gone already"))
    return PushResult(Pushed.DONE, _conclude(job, f"record {record_id} deleted"))


def _confirm(job: Job, client: YClientsClient) -> PushResult:
    """The client confirmed the visit: the record's attendance becomes "confirmed" (2) in YClients."""
    record_id = job.booking["yclients_id"]
    if record_id is None or job.booking["status"] == "cancelled":
        return PushResult(Pushed.DONE, _conclude(job, "no YClients record to confirm"))
    try:
        present = _update(job, client, {"attendance": 2})
    except RecordRefusedError as exc:
        _keep_dead_letter(job, f"YClients refused the confirmation: {exc}", "RecordRefused")
        return PushResult(Pushed.REFUSED, _conclude(job, refusal(str(exc))))
    if not present:
        return _vanished(job, record_id)
    return PushResult(Pushed.DONE, _conclude(job, f"record {record_id} confirmed"))


def _keep_dead_letter(job: Job, reason: str, error_type: str) -> None:
    record_dead_letter(
        "yclients.push",
        reason,
        {"operation_id": job.op["id"], "kind": job.op["kind"], "booking_id": job.booking["id"]},
        error_type=error_type,
        company_id=job.op["company_id"],
        reference=f"crm_operation:{job.op['id']}",
    )


def _give_up(job: Job, error: str) -> PushResult:
    _keep_dead_letter(job, f"{job.op['kind']} not confirmed after {job.op['attempts']} attempts: {error}", "CrmFailed")
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("company_id", str(job.op["company_id"]))
        scope.set_tag("crm_operation", job.op["kind"])
        sentry_sdk.capture_message(f"CRM {job.op['kind']} given up after {job.op['attempts']} attempts", level="error")
    booking, kind = job.booking, job.op["kind"]
    change, stands = None, booking
    if kind == "create":
        # YClients holds no record the fleet knows of: the local booking frees its time, and the client is
        # told that nothing is booked (the reconciliation deletes a record that turns up after all).
        change = lambda conn: BookingRepository().release(booking["id"], "failed", conn=conn)  # noqa: E731
    elif kind == "reschedule":
        stands = _put_back(job) or booking  # YClients still has the old time, as far as the fleet knows
    tell = (
        notices.crm_failed(job.tools(), stands, kind) if booking["status"] != "cancelled" or kind == "cancel" else None
    )
    return PushResult(Pushed.FAILED, _conclude(job, error, failed=True, change=change, tell=tell))


class RetryRefusedError(Exception):
    """An operator's retry that cannot be carried out (the operation is not a given-up one, or its time is gone)."""


def retry_given_up(operation_id: int) -> None:
    """An operator mended the cause: the given-up operation is tried again from its first attempt, and a
    booking it had freed holds its time again (the client is told the outcome when it comes)."""
    operations = CrmOperationRepository()
    with transaction() as conn:
        op = operations.find_one({"id": operation_id}, conn=conn)
        if op is None or op["status"] != "failed":
            raise RetryRefusedError(f"operation {operation_id} is not a failed one")
        if op["kind"] == "create":
            try:
                BookingRepository().rehold(op["booking_id"], conn=conn)
            except SlotTakenError:
                raise RetryRefusedError(
                    f"operation {operation_id}: the booking's time has been taken since; book the client anew"
                ) from None
        operations.reopen(operation_id, outcome=None, conn=conn)


def push(operation_id: int, client: YClientsClient, settings: Settings) -> PushResult:
    """One attempt at one operation."""
    operations = CrmOperationRepository()
    op = operations.claim(operation_id, settings.yclients.push_lease_seconds)
    if op is None:
        return PushResult(Pushed.SKIPPED)
    booking = BookingRepository().find_one({"id": op["booking_id"]})
    company = CompanyRepository().find_one({"id": op["company_id"]})
    if booking is None or company is None:
        following = operations.give_up(op["id"], "the booking or the company is gone")
        return PushResult(Pushed.FAILED, following=following)
    person = ClientRepository().find_one({"id": booking["client_id"]}) if booking["client_id"] else None
    job = Job(op, booking, company, person, settings)
    result = _attempt(job, client)
    result.following = job.following
    return result


def _attempt(job: Job, client: YClientsClient) -> PushResult:
    op, settings = job.op, job.settings
    steps = {"create": _create, "reschedule": _reschedule, "cancel": _cancel, "confirm": _confirm}
    try:
        return steps[op["kind"]](job, client)
    except (YClientsError, DataLayerError) as exc:  # both count against the attempts, so nothing loops forever
        if exc.retryable and op["attempts"] < settings.yclients.push_max_attempts:
            yc = settings.yclients
            delay = backoff_delay(op["attempts"], yc.push_retry_base_seconds, yc.push_retry_max_seconds)
            CrmOperationRepository().retry_later(op["id"], str(exc), delay)
            log.warning(
                "CRM %s %s: attempt %s failed, again in %.0f s: %s", op["kind"], op["id"], op["attempts"], delay, exc
            )
            return PushResult(Pushed.RETRY, retry_in=delay)
        return _give_up(job, str(exc))
