"""YClients rows as the API sends them, turned into our rows: tolerant of its quirks, strict about meaning.

Numbers may come as strings ("83169", "1", "1300.00"), phones as numbers, dates in three formats
(`2019-01-16T16:00:00+09:00`, `2019-01-16T20:35:11+0900`, `2019-01-16 16:00:00` in the salon's zone).
A row that still does not make sense raises `RowError`, and the sync keeps it aside and goes on.

Every value is checked for shape and size before any arithmetic: an id written as `1e3000000` or with a
thousand digits is refused by its text, not turned into a number (which can cost minutes of CPU that no
time limit interrupts); NaN, Infinity, a year 9999 and text PostgreSQL cannot hold are refused by name.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from shared.core.storable import BIGINT_MAX, text_problem
from shared.data.phones import InvalidPhoneError, normalize_phone

NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$")
COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")
WHOLE = re.compile(r"^[+-]?\d{1,19}(\.0*)?$")  # "83169", "83169.00"; never an exponent
AMOUNT = re.compile(r"^[+-]?\d{1,12}([.,]\d{1,6})?$")
ATTENDANCE = {2: "confirmed", 1: "came", 0: "waiting", -1: "no_show"}
MAX_TEXT = 10_000
MAX_AMOUNT = Decimal(100_000_000)
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_SEANCE_SECONDS = 24 * 3600


class RowError(ValueError):
    """A row that cannot be used; the message names the field, never its value."""


def as_int(row: dict[str, Any], field: str, *, required: bool = True, positive: bool = True) -> int | None:
    value = row.get(field)
    if value in (None, "", 0, "0") and not required:
        return None
    number = _whole(value, field)
    if positive and number <= 0:
        raise RowError(f"{field}: must be positive")
    if abs(number) > BIGINT_MAX:
        raise RowError(f"{field}: out of range")
    return number


def _whole(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise RowError(f"{field}: not a whole number")
    if isinstance(value, int):
        if value.bit_length() > 64:
            raise RowError(f"{field}: out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer() or abs(value) > BIGINT_MAX:
            raise RowError(f"{field}: not a whole number in range")
        return int(value)
    if isinstance(value, str) and len(value) <= 40 and WHOLE.match(value.strip()):
        return int(value.strip().split(".")[0])
    raise RowError(f"{field}: not a whole number")


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    if isinstance(value, int | float | bool) or value is None:
        return bool(value)
    raise RowError("flag: not a boolean")


def as_money(row: dict[str, Any], field: str) -> Decimal:
    value = row.get(field)
    if value in (None, ""):
        return Decimal(0)
    if isinstance(value, bool):
        raise RowError(f"{field}: not an amount")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError(f"{field}: not a finite amount")
    if isinstance(value, int) and value.bit_length() > 64:
        raise RowError(f"{field}: out of range")
    if isinstance(value, int | float):
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    elif isinstance(value, str) and len(value) <= 40 and AMOUNT.match(value.strip()):
        amount = Decimal(value.strip().replace(",", "."))
    else:
        raise RowError(f"{field}: not an amount")
    if amount < 0:
        raise RowError(f"{field}: must not be negative")
    if amount > MAX_AMOUNT:
        raise RowError(f"{field}: out of range")
    return amount.quantize(Decimal("0.01"))


def as_datetime(value: Any, zone: ZoneInfo, field: str) -> datetime | None:
    if value in (None, "", "0000-00-00 00:00:00", "0000-00-00"):
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise RowError(f"{field}: not a date and time")
    text = value.strip()
    try:
        if NAIVE.match(text):
            moment = datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=zone)
        elif len(text) == 10:
            moment = datetime.fromisoformat(text).replace(tzinfo=zone)
        else:
            moment = datetime.fromisoformat(COMPACT_OFFSET.sub(r"\1:\2", text))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        in_range = EARLIEST <= moment < LATEST
    except (ValueError, OverflowError):
        raise RowError(f"{field}: not a date and time") from None
    if not in_range:
        raise RowError(f"{field}: out of range (1990-2099)")
    return moment


def as_phone(value: Any, field: str = "phone") -> str | None:
    if value in (None, "", 0):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 64:
        value = str(value)
    if not isinstance(value, str) or len(value) > 64:
        raise RowError(f"{field}: not a phone number")
    try:
        return normalize_phone(value)
    except InvalidPhoneError as exc:
        raise RowError(f"{field}: {exc}") from None


def text(row: dict[str, Any], field: str, *, limit: int = MAX_TEXT) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e18:
        value = str(value)
    if not isinstance(value, str):
        raise RowError(f"{field}: not text")
    problem = text_problem(value)
    if problem:
        raise RowError(f"{field}: {problem}")
    if len(value) > limit:
        raise RowError(f"{field}: longer than {limit} characters")
    value = value.strip()
    return value or None


def _seance(row: dict[str, Any], field: str) -> int | None:
    seconds = as_int(row, field, required=False)
    if seconds is not None and seconds > MAX_SEANCE_SECONDS:
        raise RowError(f"{field}: longer than a day")
    return seconds


def _clock(value: Any, field: str) -> str:
    if not isinstance(value, str) or not re.match(r"^\d{2}:\d{2}", value):
        raise RowError(f"{field}: not a time of day")
    return value[:5]


# ---- one converter per entity: API row -> our row (validated again by the repository's model) ----------
def company(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": as_int(row, "id"),
        "title": text(row, "title") or "",
        "city": text(row, "city"),
        "timezone_name": text(row, "timezone_name") or "Europe/Moscow",
        "address": text(row, "address"),
        "phone": text(row, "phone"),
        "is_active": as_bool(row.get("active", 1)),
    }


def category(company_id: int, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "company_id": company_id,
        "id": as_int(row, "id"),
        "title": text(row, "title") or "",
        "weight": as_int(row, "weight", required=False, positive=False) or 0,
    }


def service(company_id: int, row: dict[str, Any]) -> dict[str, Any]:
    staff = row.get("staff") or []
    if not isinstance(staff, list):
        raise RowError("staff: not a list")
    lengths = [_seance(s, "seance_length") for s in staff if isinstance(s, dict)]
    duration = max((n for n in lengths if n), default=None) or _seance(row, "duration") or 3600
    return {
        "company_id": company_id,
        "id": as_int(row, "id"),
        "category_id": as_int(row, "category_id", required=False),
        "title": text(row, "title") or "",
        "price_min": as_money(row, "price_min"),
        "price_max": as_money(row, "price_max"),
        "duration_seconds": duration,
        "comment": text(row, "comment"),
        "weight": as_int(row, "weight", required=False, positive=False) or 0,
        "active": as_bool(row.get("active", 1)),
        "deleted_at": None,
    }


def staff(company_id: int, row: dict[str, Any]) -> dict[str, Any]:
    position = row.get("position") if isinstance(row.get("position"), dict) else {}
    services = row.get("services_links") or row.get("services") or []
    if not isinstance(services, list):
        raise RowError("services: not a list")
    service_ids = sorted(
        {as_int(s, "service_id" if "service_id" in s else "id") for s in services if isinstance(s, dict)}
    )
    return {
        "company_id": company_id,
        "id": as_int(row, "id"),
        "name": text(row, "name") or "",
        "specialization": text(row, "specialization"),
        "position_title": text(position, "title"),
        "avatar_url": text(row, "avatar"),
        "fired": as_bool(row.get("fired", 0)),
        "hidden": as_bool(row.get("hidden", 0)) or as_bool(row.get("is_deleted", 0)),
        "service_ids": service_ids,
        "deleted_at": None,
    }


def schedule(company_id: int, row: dict[str, Any]) -> dict[str, Any]:
    day = text(row, "date", limit=10)
    try:
        parsed = date.fromisoformat(day or "")
    except ValueError:
        raise RowError("date: not a date") from None
    raw_slots = row.get("slots") or []
    raw_busy = row.get("busy_intervals") or []
    if not isinstance(raw_slots, list) or not isinstance(raw_busy, list):
        raise RowError("slots: not a list")
    slots = [
        {"from": _clock(s.get("from"), "slots"), "to": _clock(s.get("to"), "slots")}
        for s in raw_slots
        if isinstance(s, dict)
    ]
    busy = [
        {"from": _clock(b.get("from"), "busy_intervals"), "to": _clock(b.get("to"), "busy_intervals")}
        for b in raw_busy
        if isinstance(b, dict)
    ]
    return {
        "company_id": company_id,
        "staff_id": as_int(row, "staff_id"),
        "date": parsed,
        "slots": slots,
        "busy_intervals": busy,
        "off_day": bool(row.get("off_day_type")) or not slots,
        "deleted_at": None,
    }


def client(company_id: int, row: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    return {
        "company_id": company_id,
        "yclients_id": as_int(row, "id"),
        "name": text(row, "name"),
        "phone": text(row, "phone", limit=64),  # the model normalises
        "email": text(row, "email"),
        "discount": as_money(row, "discount"),
        "first_visit_at": as_datetime(row.get("first_visit_date"), zone, "first_visit_date"),
        "last_visit_at": as_datetime(row.get("last_visit_date"), zone, "last_visit_date"),
        "sold_amount": as_money(row, "sold_amount"),
        "visits_count": as_int(row, "visits_count", required=False, positive=False) or 0,
        "deleted_at": None,
    }


def record(company_id: int, row: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """A record as a booking; `client` is returned separately so the sync can resolve its local id."""
    starts = as_datetime(row.get("datetime") or row.get("date"), zone, "datetime")
    if starts is None:
        raise RowError("datetime: missing")
    length = _seance(row, "seance_length") or _seance(row, "length")
    if not length:
        raise RowError("seance_length: missing")
    listed = row.get("services") or []
    if not isinstance(listed, list):
        raise RowError("services: not a list")
    services = [
        {"id": as_int(s, "id"), "title": text(s, "title"), "cost": str(as_money(s, "cost"))}
        for s in listed
        if isinstance(s, dict)
    ]
    deleted = as_bool(row.get("deleted", False))
    attendance = as_int(row, "attendance", required=False, positive=False) or 0
    changed = as_datetime(row.get("last_change_date"), zone, "last_change_date")
    return {
        "company_id": company_id,
        "yclients_id": as_int(row, "id"),
        "staff_id": as_int(row, "staff_id"),
        "service_id": services[0]["id"] if services else None,
        "services": services,
        "starts_at": starts,
        "ends_at": starts + timedelta(seconds=length),
        "status": "cancelled" if deleted else ATTENDANCE.get(attendance, "confirmed"),
        "comment": text(row, "comment"),
        "changed_at": changed,
        "deleted_at": datetime.now(UTC) if deleted else None,
    }
