"""One understanding step: a client's message read into what it asks for and the details it gives.

"Здравствуйте! можно к Леночке на ноготочки в пт после 6?" reads as: book; service: the salon's manicures;
master: Елена; day: Friday; from 18:00. The steps are in `shared.assistant.language` (normalise, tokens with
lemmas, services and masters, days and times, intents); this module puts them together and keeps the
result's shape, which the dialog policy (`rules.py`) acts on. Nothing here acts: it only reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Any

from shared.assistant.language import vocabulary
from shared.assistant.language.catalogue import Catalogue, match_masters, match_services
from shared.assistant.language.intents import find_hits, read_intents
from shared.assistant.language.normalise import normalise
from shared.assistant.language.tokens import Lexicon, Token, forms_of, tokenize
from shared.assistant.language.when import CARDINALS, MONTHS, ORDINALS, WEEKDAYS, When, read_when

# A client's request fits in far fewer characters; reading only this much keeps a hostile 16 KB message (the
# longest the inbound boundary accepts) from holding a worker for seconds.
MAX_READ_CHARS = 2000
PICK_ORDINALS = {**{word: n for word, n in ORDINALS.items() if n <= 12}, "последний": -1}


@dataclass(frozen=True)
class Steps:
    """Which steps run; all by default. The assistant benchmark turns each off to measure what it adds."""

    lemmas: bool = True
    typos: bool = True
    latin: bool = True
    dateparser: bool = True


@dataclass(frozen=True)
class Wish:
    """The master, days and times a client asked for; a slot is offered only if it fits all of them."""

    staff_id: int | None = None
    day: date | None = None
    last_day: date | None = None
    at: time | None = None
    after: time | None = None
    before: time | None = None

    @property
    def anything(self) -> bool:
        return any(v is not None for v in (self.staff_id, self.day, self.at, self.after, self.before))

    def without_master(self) -> Wish:
        return Wish(None, self.day, self.last_day, self.at, self.after, self.before)

    def as_data(self) -> dict[str, Any]:
        """For the dialog state, so a later turn (the chosen service) keeps the rest of the wish."""
        return {
            "staff_id": self.staff_id,
            "day": self.day.isoformat() if self.day else None,
            "last_day": self.last_day.isoformat() if self.last_day else None,
            "at": self.at.isoformat() if self.at else None,
            "after": self.after.isoformat() if self.after else None,
            "before": self.before.isoformat() if self.before else None,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Wish:
        wish = data.get("wish") or {}

        def moment(key: str) -> time | None:
            return time.fromisoformat(wish[key]) if wish.get(key) else None

        return cls(
            staff_id=wish.get("staff_id"),
            day=date.fromisoformat(wish["day"]) if wish.get("day") else None,
            last_day=date.fromisoformat(wish["last_day"]) if wish.get("last_day") else None,
            at=moment("at"),
            after=moment("after"),
            before=moment("before"),
        )

    @property
    def last(self) -> date | None:
        return self.last_day or self.day

    def admits(self, staff_id: int, local_start: datetime) -> bool:
        if self.staff_id is not None and staff_id != self.staff_id:
            return False
        if self.day is not None and not self.day <= local_start.date() <= (self.last_day or self.day):
            return False
        start = local_start.time()
        if self.at is not None:
            asked = datetime.combine(local_start.date(), self.at, tzinfo=local_start.tzinfo)
            return abs(local_start - asked) < timedelta(hours=1)
        if self.after is not None and start < self.after:
            return False
        return not (self.before is not None and start >= self.before)

    def closeness(self, local_start: datetime) -> float:
        """How far a slot is from the time asked for (0 without one): the closest are offered first."""
        if self.at is None:
            return 0.0
        asked = datetime.combine(local_start.date(), self.at, tzinfo=local_start.tzinfo)
        return abs((local_start - asked).total_seconds())


@dataclass(frozen=True)
class Understanding:
    intents: tuple[str, ...]
    greeting: bool = False
    service_parts: tuple[tuple[int, ...], ...] = ()
    missing_service: str | None = None
    related_services: tuple[int, ...] = ()  # the salon's services nearest to a missing one
    staff_id: int | None = None
    staff_ambiguous: tuple[int, ...] = ()
    missing_master: str | None = None
    when: When = field(default_factory=When)
    topics: tuple[str, ...] = ()
    pick: int | None = None

    @property
    def service_ids(self) -> list[int]:
        seen: list[int] = []
        for part in self.service_parts:
            seen += [service_id for service_id in part if service_id not in seen]
        return seen

    def asks(self, *intents: str) -> bool:
        return any(intent in self.intents for intent in intents)

    @property
    def wish(self) -> Wish:
        when = self.when
        return Wish(self.staff_id, when.day, when.last_day, when.at, when.after, when.before)


@cache
def _lexicon() -> tuple[str, ...]:
    """Every word a typo may stand for: the vocabulary's words and the words of days and times."""
    words: set[str] = set()
    for cue in vocabulary.cues():
        for part in cue.parts:
            words |= part.words
    services = vocabulary.service_words()
    words |= set(services.words) | {w for phrase in services.phrases for w in phrase}
    words |= set(vocabulary.chat_words().values())
    words |= {form for forms in vocabulary.name_forms().values() for form in forms}
    words |= set(WEEKDAYS) | set(MONTHS) | set(CARDINALS) | set(ORDINALS)
    words |= {"завтра", "сегодня", "послезавтра", "утром", "вечером", "днем", "пожалуйста", "здравствуйте"}
    words = {w for w in words if len(w) >= 3 and w.isalpha()}
    return tuple(sorted(words | {form for word in words for form in forms_of(word)}))


@lru_cache(maxsize=256)
def _with_salon_words(salon_words: tuple[str, ...]) -> Lexicon:
    return Lexicon(tuple(sorted(set(_lexicon()) | set(salon_words))))


def _numbers(tokens: list[Token]) -> tuple[int, ...]:
    return tuple(int(t.text) for t in tokens if t.is_number)


def _pick(tokens: list[Token], when: When, offered: list[datetime]) -> int | None:
    """The offered time the message chooses: its number, "второй", "последний", or its time ("на 15:00")."""
    words = [t for t in tokens if t.is_word or t.is_number]
    if len(words) == 1 and words[0].is_number and 1 <= int(words[0].text) <= len(offered):
        return int(words[0].text)
    numbers = [t for t in words if t.is_number]
    if len(words) <= 3 and len(numbers) == 1 and 1 <= int(numbers[0].text) <= len(offered):
        # "давайте 4": the fourth time, unless 4 could also be the hour of an offered time (then it is asked)
        hour = int(numbers[0].text) + (12 if int(numbers[0].text) <= 8 else 0)
        if not any(start.time() == time(hour, 0) for start in offered):
            return int(numbers[0].text)
    for token in tokens:
        for lemma in token.lemmas:
            if lemma in PICK_ORDINALS and token.is_word:
                number = PICK_ORDINALS[lemma]
                number = len(offered) if number == -1 else number
                if 1 <= number <= len(offered):
                    return number
    if when.at is not None:
        fits = [
            n
            for n, start in enumerate(offered, 1)
            if start.time() == when.at and (when.day is None or start.date() == when.day)
        ]
        if len(fits) == 1:
            return fits[0]
    return None


def understand(
    text: str,
    known: Catalogue,
    today: date,
    context: str = "idle",
    offered: list[datetime] | None = None,
    steps: Steps = Steps(),
) -> Understanding:
    """Read one message. `context`: what the chat waits for (idle, reminder, question, slots); `offered`: for
    slots, the local start of each time offered, in order."""
    plain = normalise(text[:MAX_READ_CHARS], latin=steps.latin)
    lexicon = _with_salon_words(known.lexicon) if steps.typos else Lexicon(())
    tokens = tokenize(plain, lexicon, correct=steps.typos, lemmas=steps.lemmas)
    services = match_services(tokens, known)
    masters = match_masters(tokens, known)
    hits = find_hits(tokens, context)
    said = {hit.intent for hit in hits if not hit.negated}
    greeting = [(hit.start, hit.end) for hit in hits if hit.intent == "greeting" and not hit.negated]
    masked = [Token("", frozenset()) if any(a <= i < b for a, b in greeting) else t for i, t in enumerate(tokens)]
    when = read_when([t for t in masked if t.text], plain, today, use_dateparser=steps.dateparser)
    if "late" in said and "reschedule" not in said:
        when = replace(when, shift_minutes=None)  # "буду минут на 15 позже" is a late arrival, not a move
    reading = read_intents(
        tokens,
        context,
        hits=hits,
        named_service=bool(services.parts or services.missing),
        named_master=masters.staff_id is not None or bool(masters.missing or masters.ambiguous),
        named_time=when.anything,
        named_shift=when.shift_minutes is not None,
        numbers=_numbers(tokens),
    )
    pick = _pick(tokens, when, offered or []) if context == "slots" else None
    intents = reading.intents
    if pick is not None:
        return Understanding(("pick",), pick=pick)
    if not intents:
        return Understanding(("offtopic",))  # nothing of the salon's: one polite answer, no details acted on
    return Understanding(
        intents=intents,
        greeting=reading.greeting,
        service_parts=services.parts,
        missing_service=services.missing[0] if services.missing else None,
        related_services=services.related,
        staff_id=masters.staff_id,
        staff_ambiguous=masters.ambiguous,
        missing_master=masters.missing,
        when=when,
        topics=reading.topics,
        pick=pick,
    )


WARM_UP_TEXT = "Здравствуйте! Хочу записаться на стрижку к Анне завтра в 5 вечера, сколько стоит?"


def warm_up() -> None:
    """Load what the first reading of a process would: the morphology dictionaries, the vocabulary's indexes,
    the date parser. Called in the inbound worker's main process before its pool forks, so every child,
    a replacement of a recycled one included, inherits them instead of spending about 0.15 s on its first
    message while the other children carry the load."""
    understand(WARM_UP_TEXT, Catalogue((), ()), date.today())
