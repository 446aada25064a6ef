"""Validated models of the domain: every write passes through one of these first.

They hold the rules a row must meet (positive ids, real names, canonical phones, sane money, times and
durations); the database's own constraints are the second line, not the first.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from shared.core.settings import get_settings
from shared.data.phones import InvalidPhoneError, normalize_phone

PositiveId = Annotated[int, Field(gt=0, lt=2**63)]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("100000000"), max_digits=12, decimal_places=2)]
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_BOOKING = timedelta(hours=12)


def _phone(value: str | int) -> str:
    try:
        return normalize_phone(value)
    except InvalidPhoneError as exc:
        raise ValueError(str(exc)) from None


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a timezone offset")
    return value


def _served(company_id: int) -> int:
    """Only a salon the fleet is configured for: anyone who can write to the broker could otherwise make the
    fleet read (and store) another YClients company with the fleet's own tokens."""
    served = get_settings().yclients.company_ids
    if company_id not in served:
        raise ValueError(f"company {company_id} is not served (FLEET_YCLIENTS__COMPANY_IDS)")
    return company_id


Phone = Annotated[str, AfterValidator(_phone)]
ServedCompanyId = Annotated[int, Field(gt=0, lt=2**63), AfterValidator(_served)]
E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")]  # a stored chat id: checked, not re-parsed
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Entity(BaseModel):
    """Strict about unknown fields: a typo in a column name is an error, not a silently dropped value."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CompanyIn(Entity):
    id: PositiveId
    title: NonEmpty
    city: str | None = None
    timezone_name: str = "Europe/Moscow"
    address: str | None = None
    phone: str | None = None
    is_active: bool = True
    synced_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None

    @field_validator("timezone_name")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown timezone") from None
        return value


class ServiceCategoryIn(Entity):
    company_id: PositiveId
    id: PositiveId
    title: NonEmpty
    weight: int = 0
    synced_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None


class ServiceIn(Entity):
    company_id: PositiveId
    id: PositiveId
    category_id: PositiveId | None = None
    title: NonEmpty
    price_min: Money = Decimal(0)
    price_max: Money = Decimal(0)
    duration_seconds: int = Field(default=3600, ge=300, le=12 * 3600)
    comment: str | None = None
    weight: int = 0
    active: bool = True
    synced_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _price_range(self) -> ServiceIn:
        if self.price_max and self.price_max < self.price_min:
            raise ValueError("price_max is below price_min")
        return self


class StaffIn(Entity):
    company_id: PositiveId
    id: PositiveId
    name: NonEmpty
    specialization: str | None = None
    position_title: str | None = None
    avatar_url: str | None = None
    fired: bool = False
    hidden: bool = False
    service_ids: list[PositiveId] = Field(default_factory=list)
    synced_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None


class Slot(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    start: str = Field(alias="from")
    end: str = Field(alias="to")

    @model_validator(mode="after")
    def _ordered(self) -> Slot:
        for value in (self.start, self.end):
            if not HHMM.match(value):
                raise ValueError(f"time {value!r} is not HH:MM")
        if self.start >= self.end:
            raise ValueError(f"slot {self.start}-{self.end} ends before it starts")
        return self


class StaffScheduleIn(Entity):
    company_id: PositiveId
    staff_id: PositiveId
    date: date
    slots: list[Slot] = Field(default_factory=list)
    busy_intervals: list[dict[str, Any]] = Field(default_factory=list)
    off_day: bool = False
    synced_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None

    @field_validator("slots")
    @classmethod
    def _no_overlap(cls, slots: list[Slot]) -> list[Slot]:
        ordered = sorted(slots, key=lambda slot: slot.start)
        for before, after in pairwise(ordered):
            if after.start < before.end:
                raise ValueError(f"slots {before.start}-{before.end} and {after.start}-{after.end} overlap")
        return ordered


class ClientIn(Entity):
    company_id: PositiveId
    yclients_id: PositiveId | None = None
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    phone: Phone | None = None
    email: str | None = None
    discount: Decimal = Field(default=Decimal(0), ge=0, le=100)
    first_visit_at: AwareDatetime | None = None
    last_visit_at: AwareDatetime | None = None
    sold_amount: Decimal = Field(default=Decimal(0), ge=0)
    visits_count: int = Field(default=0, ge=0)
    synced_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not EMAIL.match(value):
            raise ValueError("not an e-mail address")
        return value.lower()

    @model_validator(mode="after")
    def _reachable(self) -> ClientIn:
        if self.yclients_id is None and self.phone is None:
            raise ValueError("a client needs a phone or a YClients id")
        return self


BookingStatus = Literal["waiting", "confirmed", "came", "no_show", "cancelled"]


class BookingIn(Entity):
    company_id: PositiveId
    yclients_id: PositiveId | None = None
    client_id: PositiveId | None = None
    staff_id: PositiveId
    service_id: PositiveId | None = None
    services: list[dict[str, Any]] = Field(default_factory=list)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    status: BookingStatus = "confirmed"
    source: Literal["yclients", "assistant"] = "yclients"
    crm_state: Literal["pending", "synced", "refused", "failed", "vanished"] = "synced"
    comment: str | None = None
    changed_at: AwareDatetime | None = None
    synced_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _time_range(self) -> BookingIn:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.ends_at - self.starts_at > MAX_BOOKING:
            raise ValueError("a booking cannot last longer than 12 hours")
        return self


class DialogContextIn(Entity):
    company_id: PositiveId
    chat_id: NonEmpty
    client_id: PositiveId | None = None
    state: NonEmpty = "idle"
    data: dict[str, Any] = Field(default_factory=dict)
    last_seq: int = Field(default=0, ge=0)
    answered_seq: int = Field(default=0, ge=0)


MAX_MESSAGE_CHARS = 16_384


class MessageIn(Entity):
    company_id: PositiveId
    chat_id: Phone
    gateway_message_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    chat_seq: PositiveId
    body: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]
    media: dict[str, Any] | None = None
    sent_at: AwareDatetime
    status: Literal["pending", "answered", "merged", "failed", "held"] = "pending"


class OutboxIn(Entity):
    company_id: PositiveId
    chat_id: Phone
    idempotency_key: NonEmpty
    body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS * 4)]
    message_ids: list[PositiveId] = Field(default_factory=list)


class CrmOperationIn(Entity):
    """A booking's change on its way to YClients, written in the chat's own transaction."""

    company_id: PositiveId
    booking_id: PositiveId
    kind: Literal["create", "reschedule", "cancel", "confirm"]
    chat_id: E164 | None = None
    details: dict[str, Any] = Field(default_factory=dict)


MAX_ALERT_CHARS = 4096  # Telegram's limit for one message


class AlertIn(Entity):
    """An alert for the operators' Telegram chat, keyed by the change it reports."""

    key: NonEmpty
    kind: Literal["health", "whatsapp_session", "backup", "drill", "mass_delete", "handover", "late"]
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ALERT_CHARS)]


class WebhookEventIn(Entity):
    """A YClients webhook as ids only, stored before it is applied: never the body's names and phones."""

    company_id: PositiveId
    resource: Literal["record", "client"]
    resource_id: PositiveId
    action: Annotated[str, StringConstraints(max_length=40)]


INFORMATION_TOPICS = ("address", "directions", "hours", "phone", "payment", "parking", "about")
SalonText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
SalonWord = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=60)]


class SalonAssistantIn(Entity):
    """A salon's own settings for the assistant: what it tells clients about itself, and its own words for
    its services (phrase -> service ids) and masters (nickname -> staff id)."""

    company_id: PositiveId
    information: dict[Literal["address", "directions", "hours", "phone", "payment", "parking", "about"], SalonText] = (
        Field(default_factory=dict)
    )
    service_words: dict[SalonWord, Annotated[list[PositiveId], Field(min_length=1, max_length=50)]] = Field(
        default_factory=dict, max_length=500
    )
    master_words: dict[SalonWord, PositiveId] = Field(default_factory=dict, max_length=200)
