"""Free slots: the staff member's working hours minus existing bookings, in the salon's local time."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

STEP = timedelta(minutes=30)
LEAD = timedelta(minutes=30)  # no slot starts sooner than this from now


@dataclass(frozen=True, order=True)
class FreeSlot:
    starts_at: datetime
    staff_id: int

    def ends_at(self, duration: timedelta) -> datetime:
        return self.starts_at + duration


def _at(day: date, hhmm: str, zone: ZoneInfo) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime.combine(day, time(int(hours), int(minutes)), tzinfo=zone)


def free_starts(
    day: date,
    working: Iterable[dict[str, str]],
    busy: Iterable[tuple[datetime, datetime]],
    duration: timedelta,
    zone: ZoneInfo,
    now: datetime,
) -> list[datetime]:
    """Start times on `day`, on a 30-minute grid, where `duration` fits in working hours and clashes with nothing."""
    taken = sorted(busy)
    starts: list[datetime] = []
    for window in working:
        start, end = _at(day, window["from"], zone), _at(day, window["to"], zone)
        candidate = start
        while candidate + duration <= end:
            finish = candidate + duration
            if candidate >= now + LEAD and not any(b0 < finish and candidate < b1 for b0, b1 in taken):
                starts.append(candidate)
            candidate += STEP
    return starts
