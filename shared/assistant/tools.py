"""What an assistant may do in the salon, run inside the answering transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.assistant.language.catalogue import Catalogue, catalogue
from shared.assistant.slots import FreeSlot, free_starts
from shared.core.db import transaction
from shared.core.settings import get_settings
from shared.data.repositories.calendar import BookingRepository, StaffScheduleRepository
from shared.data.repositories.catalogue import ServiceCategoryRepository, ServiceRepository, StaffRepository
from shared.data.repositories.crm_operations import CrmOperationRepository
from shared.data.repositories.reminders import ReminderRepository
from shared.data.repositories.salon_assistant import SalonAssistantRepository


class SalonTools:
    """Catalogue, free slots, booking, moving and cancelling for one client of one salon.

    Where the salon's calendar lives in YClients, every change is also written as a pending CRM operation in
    the same transaction (`crm_operation_ids` lists them, for the caller to hand to the YClients worker)."""

    def __init__(
        self,
        company: dict[str, Any],
        client: dict[str, Any],
        now: datetime,
        chat_id: str | None = None,
        *,
        staff: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        """`staff`: the bookable staff's reading, when the caller queued it with its own reads (one round trip
        for all of them); without it, `staff()` reads them on first use."""
        self.company_id: int = company["id"]
        self.company = company
        self.chat_id = chat_id
        self.crm_operation_ids: list[int] = []
        self.writes_to_crm = get_settings().yclients.writes_to(self.company_id)
        self.zone = ZoneInfo(company.get("timezone_name") or "Europe/Moscow")
        self.client = client
        self.now = now
        self._services = ServiceRepository()
        self._staff = StaffRepository()
        self._schedules = StaffScheduleRepository()
        self._bookings = BookingRepository()
        # The catalogue is read once per answer: a reply lists, matches and names from it many times.
        self._active_services: list[dict[str, Any]] | None = None
        self._bookable_staff: list[dict[str, Any]] | None = None
        self._staff_read = staff
        self._settings: dict[str, Any] | None = None

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    def services(self) -> list[dict[str, Any]]:
        if self._active_services is None:
            self._active_services = self._services.active(self.company_id)
        return self._active_services

    def service(self, service_id: int) -> dict[str, Any] | None:
        return self._services.find_one({"company_id": self.company_id, "id": service_id})

    def staff(self) -> list[dict[str, Any]]:
        if self._bookable_staff is None:
            read = self._staff_read or (lambda: self._staff.bookable(self.company_id))
            self._bookable_staff = read()
        return self._bookable_staff

    def salon_settings(self) -> dict[str, Any]:
        """The salon's own words and information for the assistant (`fleet salon set`)."""
        if self._settings is None:
            self._settings = SalonAssistantRepository().of(self.company_id)
        return self._settings

    def catalogue(self) -> Catalogue:
        """The salon's services and masters as the assistant reads them, with the salon's own words."""
        own = self.salon_settings()
        return catalogue(
            self.services(),
            self.staff(),
            own_words=own["service_words"],
            own_masters=own["master_words"],
            category_titles=lambda: {
                row["id"]: row["title"]
                for row in ServiceCategoryRepository().find_many({"company_id": self.company_id})
            },
        )

    def information(self, topic: str) -> str | None:
        """What the salon tells clients about `topic` (its settings first, then the company data from YClients)."""
        said = self.salon_settings()["information"].get(topic)
        if said:
            return str(said)
        if topic in ("address", "phone") and self.company.get(topic):
            return str(self.company[topic])
        return None

    def working_hours(self, day: date) -> list[tuple[int, str, str]]:
        """(staff id, first start, last end) of each master working that day, from the synced schedules."""
        found = []
        bookable = {member["id"] for member in self.staff()}
        for row in self._schedules.for_day(self.company_id, day):
            slots = [slot for slot in row["slots"] or [] if slot.get("from") and slot.get("to")]
            if row["off_day"] or not slots or row["staff_id"] not in bookable:
                continue
            found.append((row["staff_id"], min(s["from"] for s in slots), max(s["to"] for s in slots)))
        return sorted(found)

    def staff_for(self, service_id: int) -> list[dict[str, Any]]:
        return [s for s in self.staff() if not s["service_ids"] or service_id in s["service_ids"]]

    def free_slots(
        self,
        service_id: int,
        days: int,
        limit: int,
        admits: Callable[[int, datetime], bool] | None = None,
        *,
        moving: int | None = None,
    ) -> list[FreeSlot]:
        """The earliest free slots for a service across every staff member who does it; `admits(staff id,
        local start)` keeps only the slots a client asked for (a master, a day, a time window). `moving`: the
        booking being moved, whose own time does not count as taken ("на полчаса раньше" overlaps it)."""
        service = self.service(service_id)
        if service is None:
            return []
        duration = timedelta(seconds=service["duration_seconds"])
        today = self.local(self.now).date()
        last = today + timedelta(days=days - 1)
        found: list[FreeSlot] = []
        for member in self.staff_for(service_id):
            schedule = {
                row["date"]: row for row in self._schedules.for_staff(self.company_id, member["id"], today, last)
            }
            window_start = datetime.combine(today, datetime.min.time(), tzinfo=self.zone)
            busy = [
                (row["starts_at"], row["ends_at"])
                for row in self._bookings.busy(
                    self.company_id, member["id"], window_start, window_start + timedelta(days=days)
                )
                if row["id"] != moving
            ]
            for offset in range(days):
                day: date = today + timedelta(days=offset)
                row = schedule.get(day)
                if row is None or row["off_day"]:
                    continue
                for start in free_starts(day, row["slots"], busy, duration, self.zone, self.now):
                    if admits is None or admits(member["id"], self.local(start)):
                        found.append(FreeSlot(start, member["id"]))
        return sorted(found)[:limit]

    def book(self, service_id: int, staff_id: int, starts_at: datetime) -> dict[str, Any]:
        """Create the booking; raises SlotTakenError when someone took the time meanwhile.

        The insert runs in a savepoint, so a refused booking leaves the answering transaction usable.
        """
        service = self.service(service_id)
        if service is None:
            raise LookupError(f"service {service_id} is no longer offered")
        with transaction():
            booking = self._bookings.create(
                {
                    "company_id": self.company_id,
                    "client_id": self.client["id"],
                    "staff_id": staff_id,
                    "service_id": service_id,
                    "services": [{"id": service_id, "title": service["title"], "cost": str(service["price_min"])}],
                    "starts_at": starts_at,
                    "ends_at": starts_at + timedelta(seconds=service["duration_seconds"]),
                    "status": "confirmed",
                    "source": "assistant",
                    "crm_state": "pending" if self.writes_to_crm else "synced",
                }
            )
            if self.writes_to_crm:
                self._crm(booking, "create")
            return booking

    def _crm(self, booking: dict[str, Any], kind: str, details: dict[str, Any] | None = None) -> None:
        operation = CrmOperationRepository().add(
            self.company_id, booking["id"], kind, chat_id=self.chat_id, details=details
        )
        self.crm_operation_ids.append(operation)

    def _in_crm(self, booking: dict[str, Any]) -> bool:
        """YClients has the booking, or will once its pending create is carried out."""
        return self.writes_to_crm and (booking["yclients_id"] is not None or booking["crm_state"] == "pending")

    def upcoming_bookings(self) -> list[dict[str, Any]]:
        return self._bookings.for_client(self.client["id"], upcoming_from=self.now)

    def my_booking(self, booking_id: int) -> dict[str, Any]:
        """One of the client's upcoming bookings; LookupError when it is not (cancelled, past, someone else's)."""
        for row in self.upcoming_bookings():
            if row["id"] == booking_id:
                return row
        raise LookupError("that booking is not one of the client's upcoming bookings")

    def cancel(self, booking_id: int) -> dict[str, Any]:
        self.my_booking(booking_id)
        with transaction():
            booking = self._bookings.cancel(booking_id)
            if self._in_crm(booking):
                self._crm(booking, "cancel")
        return booking

    def reschedule(self, booking_id: int, staff_id: int, starts_at: datetime) -> dict[str, Any]:
        """Move the booking, keeping its length; raises SlotTakenError when the new time is taken meanwhile."""
        current = self.my_booking(booking_id)
        length = current["ends_at"] - current["starts_at"]
        before = {
            "starts_at": current["starts_at"].isoformat(),
            "ends_at": current["ends_at"].isoformat(),
            "staff_id": current["staff_id"],
        }
        with transaction():
            moved = self._bookings.reschedule(booking_id, starts_at, starts_at + length, staff_id=staff_id)
            if self._in_crm(moved):
                self._crm(moved, "reschedule", before)
        return moved

    def answer_reminder(self, booking_id: int, answer: str) -> None:
        """Keep the client's answer; a confirmed visit is marked confirmed in YClients too."""
        with transaction():
            ReminderRepository().answer(booking_id, answer)
            booking = self._bookings.find_one({"id": booking_id})
            if answer == "confirmed" and booking is not None and self._in_crm(booking):
                self._crm(booking, "confirm")
