"""Seed data for data-layer and worker tests: the seed salon (ops/harness/seed.py, which the benchmarks seed
too) and bookings in its calendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ops.harness.seed import COMPANY, chat_message, seed_salon

__all__ = ["COMPANY", "MOSCOW_NOON", "booking", "chat_message", "seed_salon"]

MOSCOW_NOON = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # 12:00 in Moscow


def booking(staff_id: int = 1, start: datetime = MOSCOW_NOON, minutes: int = 60, **extra: object) -> dict:
    return {
        "company_id": COMPANY,
        "staff_id": staff_id,
        "starts_at": start,
        "ends_at": start + timedelta(minutes=minutes),
        **extra,
    }
