"""What a client's own words ask for: the service, the master, the day and the time window.

"хочу записаться на стрижку завтра после 18", "можно к Анне в пятницу?", "сколько стоит маникюр": services and
masters are recognised against the salon's own catalogue (word stems, so Russian endings do not matter), days by
dateparser (a well-kept parser that reads Russian: "завтра", "в пятницу", "1 декабря"), time windows ("после 18",
"до 12", "в 15:00", "утром", "вечером") by the rules below. Anything not recognised stays empty, and the menu
remains the fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from dateparser.search import search_dates

WORD = re.compile(r"[а-яa-z]+")
DAY_HINT = re.compile(
    r"сегодня|завтра|послезавтра|понедельн|вторник|сред[уаы]|четверг|пятниц|суббот|воскресен"
    r"|январ|феврал|март|апрел|ма[яй]|июн|июл|август|сентябр|октябр|ноябр|декабр|\b\d{1,2}[./]\d{1,2}\b"
)
AFTER = re.compile(r"\b(?:после|с|позже)\s+(\d{1,2})(?::(\d{2}))?(?!\s*(?:числа|[./]))")
BEFORE = re.compile(r"\b(?:до|раньше)\s+(\d{1,2})(?::(\d{2}))?(?!\s*(?:числа|[./]))")
AT = re.compile(r"\b(?:в|на)\s+(\d{1,2})(?::(\d{2}))(?!\s*[./]\d)|\b(?:в|на)\s+(\d{1,2})\s*(?:час|ч\b)")
PARTS_OF_DAY = {
    "утром": (None, time(12, 0)),
    "днем": (time(12, 0), time(17, 0)),
    "вечером": (time(17, 0), None),
}
STOP_STEMS = frozenset({"запис", "хочу", "можн", "пожал", "сколь", "стои", "завтр", "сегод"})


def _stem(word: str) -> str:
    return word[:5] if len(word) > 5 else word


def _stems(text: str) -> set[str]:
    return {_stem(word) for word in WORD.findall(text) if len(word) >= 4} - STOP_STEMS


@dataclass(frozen=True)
class Wish:
    """What the message names; empty fields were not said (or not understood)."""

    service_ids: list[int] = field(default_factory=list)
    staff_id: int | None = None
    day: date | None = None
    after: time | None = None
    before: time | None = None

    @property
    def anything(self) -> bool:
        return bool(self.service_ids or self.staff_id or self.day or self.after or self.before)

    def as_data(self) -> dict[str, Any]:
        """For the dialog state, so a later turn (the chosen service) keeps the rest of the wish."""
        return {
            "staff_id": self.staff_id,
            "day": self.day.isoformat() if self.day else None,
            "after": self.after.isoformat() if self.after else None,
            "before": self.before.isoformat() if self.before else None,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Wish:
        wish = data.get("wish") or {}
        return cls(
            staff_id=wish.get("staff_id"),
            day=date.fromisoformat(wish["day"]) if wish.get("day") else None,
            after=time.fromisoformat(wish["after"]) if wish.get("after") else None,
            before=time.fromisoformat(wish["before"]) if wish.get("before") else None,
        )

    def admits(self, staff_id: int, local_start: datetime) -> bool:
        if self.staff_id is not None and staff_id != self.staff_id:
            return False
        if self.day is not None and local_start.date() != self.day:
            return False
        if self.after is not None and local_start.time() < self.after:
            return False
        return not (self.before is not None and local_start.time() >= self.before)


def normalise(text: str) -> str:
    return text.lower().replace("ё", "е")


def match_services(text: str, services: list[dict[str, Any]]) -> list[int]:
    """The services whose title shares the most word stems with the text (none when none shares any)."""
    said = _stems(text)
    scored = [(len(said & _stems(normalise(s["title"]))), s["id"]) for s in services]
    best = max((score for score, _ in scored), default=0)
    return [service_id for score, service_id in scored if best and score == best]


def match_staff(text: str, staff: list[dict[str, Any]]) -> int | None:
    """The master whose first name the text names in any case ("к Анне", "Марию"); None unless exactly one."""
    words = WORD.findall(text)
    found = set()
    for member in staff:
        first = normalise(str(member["name"]).split()[0]) if member.get("name") else ""
        if len(first) < 3:
            continue
        prefix = first[: min(4, len(first) - 1)]
        if any(word.startswith(prefix) and len(word) <= len(first) + 2 for word in words):
            found.add(member["id"])
    return found.pop() if len(found) == 1 else None


def _clock(hours: str, minutes: str | None) -> time | None:
    hour, minute = int(hours), int(minutes or 0)
    return time(hour, minute) if hour < 24 and minute < 60 else None


def time_window(text: str) -> tuple[time | None, time | None]:
    after = before = None
    if match := AFTER.search(text):
        after = _clock(match.group(1), match.group(2))
    if match := BEFORE.search(text):
        before = _clock(match.group(1), match.group(2))
    if after is None and before is None and (match := AT.search(text)):
        at = _clock(match.group(1) or match.group(3), match.group(2))
        if at is not None:  # "в 15:00": from then, for an hour
            after, before = at, (datetime.combine(date.min, at) + timedelta(hours=1)).time()
    for word, (start, end) in PARTS_OF_DAY.items():
        if word in text:
            after, before = after or start, before or end
    return after, before


NUMERIC_DAY = re.compile(r"\b(\d{1,2})[./](\d{1,2})\b")


def day_named(text: str, today: date) -> date | None:
    """The day the text names, from today on; None when it names none (or only a past one)."""
    if match := NUMERIC_DAY.search(text):  # "03.12": day first, this year or the next
        day, month = int(match.group(1)), int(match.group(2))
        for year in (today.year, today.year + 1):
            try:
                candidate = date(year, month, day)
            except ValueError:
                return None
            if candidate >= today:
                return candidate
        return None
    if not DAY_HINT.search(text):
        return None  # dateparser is the slow part: only asked when a day word is there
    cleaned = AFTER.sub(" ", BEFORE.sub(" ", text))
    base = datetime.combine(today, time(12, 0))
    found = search_dates(
        cleaned,
        languages=["ru"],
        settings={"PREFER_DATES_FROM": "future", "RELATIVE_BASE": base, "DATE_ORDER": "DMY"},
    )
    for _, moment in found or []:
        if moment.date() >= today:
            return moment.date()
    return None


def understand(text: str, services: list[dict[str, Any]], staff: list[dict[str, Any]], today: date) -> Wish:
    lowered = normalise(text)
    after, before = time_window(lowered)
    return Wish(
        service_ids=match_services(lowered, services),
        staff_id=match_staff(lowered, staff),
        day=day_named(lowered, today),
        after=after,
        before=before,
    )
