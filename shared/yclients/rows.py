"""YClients rows as the API sends them, turned into our rows: tolerant of its quirks, strict about meaning.

Numbers may come as strings ("83169", "1", "1300.00"), phones as numbers, dates in three formats
(`2019-01-16T16:00:00+09:00`, `2019-01-16T20:35:11+0900`, `2019-01-16 16:00:00` in the salon's zone).
A row that still does not make sense raises, and the sync reports and skips it.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from shared.phones import InvalidPhoneError, normalize_phone

NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$")
COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")
ATTENDANCE = {2: "confirmed", 1: "came", 0: "waiting", -1: "no_show"}


class RowError(ValueError):
    """A row that cannot be used; the message names the field, never its value."""


def as_int(row: dict[str, Any], field: str, *, required: bool = True, positive: bool = True) -> int | None:
    value = row.get(field)
    if value in (None, "", 0, "0") and not required:
        return None
    try:
        number = int(Decimal(str(value).strip()))
    except (InvalidOperation, ValueError, TypeError):
        raise RowError(f"{field}: not a whole number") from None
    if positive and number <= 0:
        raise RowError(f"{field}: must be positive")
    return number


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def as_money(row: dict[str, Any], field: str) -> Decimal:
    value = row.get(field)
    if value in (None, ""):
        return Decimal(0)
    try:
        amount = Decimal(str(value).replace(",", ".").strip())
    except InvalidOperation:
        raise RowError(f"{field}: not an amount") from None
    if amount < 0 or not amount.is_finite():
        raise RowError(f"{field}: must not be negative")
    return amount.quantize(Decimal("0.01"))


def as_datetime(value: Any, zone: ZoneInfo, field: str) -> datetime | None:
    if value in (None, "", "0000-00-00 00:00:00", "0000-00-00"):
        return None
    text = str(value).strip()
    try:
        if NAIVE.match(text):
            return datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=zone)
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=zone)
        return datetime.fromisoformat(COMPACT_OFFSET.sub(r"\1:\2", text))
    except ValueError:
        raise RowError(f"{field}: not a date and time") from None


def as_phone(value: Any, field: str = "phone") -> str | None:
    if value in (None, "", 0):
        return None
    try:
        return normalize_phone(value)
    except InvalidPhoneError as exc:
        raise RowError(f"{field}: {exc}") from None


def text(row: dict[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


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
    lengths = [as_int(s, "seance_length", required=False) for s in staff if isinstance(s, dict)]
    duration = max((n for n in lengths if n), default=None) or as_int(row, "duration", required=False) or 3600
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
    day = text(row, "date")
    try:
        parsed = date.fromisoformat(day or "")
    except ValueError:
        raise RowError("date: not a date") from None
    slots = [
        {"from": str(s.get("from", ""))[:5], "to": str(s.get("to", ""))[:5]}
        for s in row.get("slots") or []
        if isinstance(s, dict)
    ]
    return {
        "company_id": company_id,
        "staff_id": as_int(row, "staff_id"),
        "date": parsed,
        "slots": slots,
        "busy_intervals": [b for b in row.get("busy_intervals") or [] if isinstance(b, dict)],
        "off_day": bool(row.get("off_day_type")) or not slots,
        "deleted_at": None,
    }


def client(company_id: int, row: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    return {
        "company_id": company_id,
        "yclients_id": as_int(row, "id"),
        "name": text(row, "name"),
        "phone": None if row.get("phone") in (None, "", 0) else str(row.get("phone")).strip(),  # the model normalises
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
    length = as_int(row, "seance_length", required=False) or as_int(row, "length", required=False)
    if not length:
        raise RowError("seance_length: missing")
    services = [
        {"id": as_int(s, "id"), "title": text(s, "title"), "cost": str(as_money(s, "cost"))}
        for s in row.get("services") or []
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
