"""What a message asks for: cues from intents.toml found in the tokens, negations read, and a few rules that
decide between readings of the same words.

The rules, each a fact about how clients write:
- a longer cue over the same words wins ("нет проблем" is not "нет");
- a negated cue asks for nothing ("не отменяйте"); where the chat waits for an answer, the negation answers;
- the more particular request hides the general one it contains: a cancellation, a move, or a question about
  one's own bookings all say "запись", and none of them is a new booking;
- a greeting, thanks or "ок" count only when nothing else is asked;
- a service or a master named with nothing asked of them is a wish to book ("ноготочки в субботу");
- in an answer to a reminder, "буду" confirms, "не смогу" or "нет" asks to cancel (which is asked back first),
  and a bare "нет" beside "приду" is emphasis ("нет-нет, приду").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache

from shared.assistant.language.tokens import Token
from shared.assistant.language.vocabulary import Cue, cues

MAX_GAP = 2
NEGATIONS = frozenset({"не", "ни"})
NEGATION_PART = frozenset({"не"})
PAST_BOOKING = re.compile(r"^запис\w*(л|лся|лась|лись|ла|ли|лось)$")  # "записывался": a booking that exists
# intent -> {hidden intent: scope}: "message" hides it anywhere in the message ("не смогу, давайте перенесём" is a
# move, not a cancellation); "clause" only in the same clause ("на когда я записана? и можно добавить педикюр"
# asks both).
SUPPRESSES = {
    "reschedule": {"book": "clause", "cancel": "message", "my_bookings": "clause", "confirm": "message"},
    "cancel": {"book": "clause", "my_bookings": "clause"},
    "my_bookings": {"book": "clause", "masters": "message"},
    "book": {"masters": "clause", "services": "clause"},
    "masters": {"services": "message"},
    "info": {"services": "clause"},  # "есть ли у вас парковка" asks about parking, not a service
    "human": {"masters": "message"},
}
CLAUSE_ENDS = frozenset({"?", "!", ".", ";", "и", "а"})
GREETING_WORDS_MAX = 5  # a longer message that only greets says something else ("Здравствуйте! Предлагаем …")
COURTESY = frozenset({"greeting", "thanks", "ack", "goodbye"})
CONTEXT_CUES = {"reminder": {"reminder", "question"}, "question": {"question"}, "slots": {"question"}}
# A message of nothing but a day and a time ("послезавтра вечером") asks for a booking then.
TIME_WORDS = frozenset({
    "сегодня", "завтра", "послезавтра", "утро", "утром", "вечер", "вечером", "день", "днем", "после", "до", "в",
    "на", "с", "к", "час", "часик", "около", "обед", "пол", "половина", "через", "неделя", "следующий", "этот",
    "понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье", "выходные", "выходной",
    "январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август", "сентябрь", "октябрь", "ноябрь",
    "декабрь", "число", "утра", "вечера", "дня", "можно", "или", "а",
})  # fmt: skip
WISH_WORDS = frozenset({"можно", "хотеть", "хотеться", "нужно", "нужный", "надо", "давать", "удобно", "бы", "подойти"})


@dataclass(frozen=True)
class Hit:
    intent: str
    topic: str | None
    start: int
    end: int
    negated: bool
    weak: bool
    alone: bool
    with_service: bool
    matched: frozenset[int]  # the tokens the cue's words matched (not the words between them)


def _match(cue: Cue, tokens: list[Token], start: int, last: int) -> list[int] | None:
    """The tokens the cue's words match when it matches from `start`, else None."""
    token = tokens[start]
    if not cue.parts[0].matches(token.text, token.lemmas, start, last):
        return None
    matched = [start]
    for previous, part in zip(cue.parts, cue.parts[1:], strict=False):
        i = matched[-1] + 1
        gap = 0 if previous.lemmas == NEGATION_PART else MAX_GAP  # "не приду" but not "не отменяйте, я приду"
        for j in range(i, min(len(tokens), i + gap + 1)):
            if part.matches(tokens[j].text, tokens[j].lemmas, j, last):
                matched.append(j)
                break
        else:
            return None
    return matched


def _negated(tokens: list[Token], start: int, cue: Cue) -> bool:
    if not cue.parts[0].words.isdisjoint(("не", "нет")):
        return False
    return any(tokens[j].text in NEGATIONS for j in range(max(0, start - MAX_GAP), start))


@cache
def _by_first_word() -> dict[str, tuple[Cue, ...]]:
    """Cues by every word their first part may match: a token looks up its own few instead of trying all."""
    index: dict[str, list[Cue]] = {}
    for cue in cues():
        for word in cue.parts[0].words:
            index.setdefault(word, []).append(cue)
    return {word: tuple(found) for word, found in index.items()}


def find_hits(tokens: list[Token], context: str = "idle") -> list[Hit]:
    active = CONTEXT_CUES.get(context, set())
    last = max((i for i, t in enumerate(tokens) if t.is_word), default=-1)
    index = _by_first_word()
    hits = []
    for start, token in enumerate(tokens):
        candidates = {cue for word in (token.text, *token.lemmas) for cue in index.get(word, ())}
        for cue in candidates:
            if cue.context is not None and cue.context not in active:
                continue
            matched = _match(cue, tokens, start, last)
            if matched is not None:
                negated = _negated(tokens, start, cue)
                end = matched[-1] + 1
                hits.append(
                    Hit(
                        cue.intent,
                        cue.topic,
                        start,
                        end,
                        negated,
                        cue.weak,
                        cue.alone,
                        cue.with_service,
                        frozenset(matched),
                    )
                )
    # A longer cue over the same words wins: "нет проблем" is not "нет", "не отменять" is not "отменять".
    return [
        hit for hit in hits if not any(other.intent != hit.intent and hit.matched < other.matched for other in hits)
    ]


def _clauses(tokens: list[Token]) -> list[int]:
    """The clause number of each token (clauses end at "?", "!", ".", "и", "а")."""
    numbers, clause = [], 0
    for token in tokens:
        numbers.append(clause)
        if token.text in CLAUSE_ENDS:
            clause += 1
    return numbers


@dataclass(frozen=True)
class Reading:
    """The intents in the order the message says them, the salon topics asked about, and the greeting."""

    intents: tuple[str, ...]
    topics: tuple[str, ...]
    greeting: bool


def read_intents(
    tokens: list[Token],
    context: str,
    *,
    named_service: bool,
    named_master: bool,
    named_time: bool,
    named_shift: bool = False,
    numbers: tuple[int, ...] = (),
    hits: list[Hit] | None = None,
) -> Reading:
    """`hits`: the cues already found in these tokens (`find_hits`), when the caller has them."""
    hits = find_hits(tokens, context) if hits is None else hits
    where: dict[str, set[int]] = {}  # intent -> the positions it was said at

    def add(intent: str, position: int) -> None:
        where.setdefault(intent, set()).add(position)

    words = [t.text for t in tokens]
    wishes = any(t.any(WISH_WORDS) for t in tokens) or any(t.text == "к" for t in tokens)
    # "я бы записалась" wishes to book; "я записалась", "он записывался" ask about a booking that exists.
    hits = [h for h in hits if not (h.intent == "my_bookings" and "бы" in words[h.start : h.end])]
    hits = [
        replace(h, intent="my_bookings")
        if h.intent == "book"
        and PAST_BOOKING.match(words[h.start])
        and "бы" not in words[max(0, h.start - 3) : h.start]
        else h
        for h in hits
        if not (h.with_service and not named_service)
    ]
    # "я работаю до четырёх" is the client's own day, not the salon's hours.
    hits = [h for h in hits if not (h.topic == "hours" and "я" in words[max(0, h.start - 2) : h.start])]
    negated = {hit.intent for hit in hits if hit.negated}
    live = [hit for hit in hits if not hit.negated]
    for hit in live:
        add(hit.intent, hit.start)
    topics = list(dict.fromkeys(hit.topic for hit in sorted(live, key=lambda h: h.start) if hit.topic))
    spans = tuple((hit.start, hit.end) for hit in live if hit.intent == "greeting")

    # "сколько" with a service and no time question is a price question ("а мужская стрижка сколько").
    for i, token in enumerate(tokens):
        if token.any(("сколько",)) and named_service and not (i and words[i - 1] in ("во", "до", "через", "на")):
            add("price", i)
    if "services" in where and not named_service and not _says_what(tokens):
        where.pop("services")
    # "работать" asks for hours, unless it is about a master ("а Лена работает?", "какие мастера работают").
    weak_hours = all(hit.weak for hit in live if hit.topic == "hours")
    about_a_master = False
    if "info" in where and weak_hours and "hours" in topics and (named_master or "masters" in where):
        topics.remove("hours")
        add("masters", min(where["info"]))
        about_a_master = True
        if not topics:
            where.pop("info")
    # "где у вас машину оставить" asks about parking: a bare "где" does not ask the address too.
    weak_address = all(hit.weak for hit in live if hit.topic == "address")
    if "address" in topics and weak_address and {"directions", "parking"} & set(topics):
        topics.remove("address")

    if context == "reminder":
        _reminder(where, hits, negated, numbers, named_time)
    elif context in ("question", "slots"):
        _question(where, negated, numbers, words)
        if context == "slots" and named_time and "no" in where:
            where.pop("no")  # "а после 17 нет ничего?" asks for other times

    only_alone = (
        {h.intent for h in live} - {h.intent for h in live if not h.alone} - ({"masters"} if about_a_master else set())
    )
    if set(where) - COURTESY - only_alone or (named_service and wishes):
        for intent in only_alone:
            where.pop(intent, None)  # "к тому же мастеру" in a booking asks nothing about masters
    clause = _clauses(tokens)
    for intent, hidden in SUPPRESSES.items():
        for other, scope in hidden.items():
            if intent not in where or other not in where:
                continue
            if scope == "message":
                where.pop(other)
                continue
            near = {clause[i] for i in where[intent]}
            where[other] = {i for i in where[other] if clause[i] not in near}
            if not where[other]:
                where.pop(other)
    if named_shift and "late" not in where and "reschedule" not in where:
        add("reschedule", 0)  # "можно мою запись на час раньше?" moves it
        where.pop("my_bookings", None)
    requests = set(where) - COURTESY
    if not requests and (context != "reminder" or named_service):
        wish = wishes or all(t.any(TIME_WORDS) for t in tokens if t.is_word)
        thanked = "thanks" in where and not wish and not named_time  # "спасибо Елене за маникюр"
        if (
            (named_service and not thanked)
            or (named_master and (wish or named_time))
            or (named_time and (wish or context == "slots"))
        ):
            add("book", 0)
    elif not requests and context == "reminder" and named_time:
        add("reschedule", 0)
    requests = set(where) - COURTESY
    if "ack" in where:
        positions = where.pop("ack")
        if not requests and "thanks" not in where:
            where["thanks"] = positions
    greeting = "greeting" in where
    if greeting and set(where) != {"greeting"}:
        where.pop("greeting")
    elif greeting and sum(t.is_word for t in tokens) - sum(b - a for a, b in spans) > GREETING_WORDS_MAX:
        where.pop("greeting")  # a long message that only greets is about something else
    order = sorted(where, key=lambda intent: min(where[intent]))
    return Reading(tuple(order), tuple(topics), greeting)


def _says_what(tokens: list[Token]) -> bool:
    """'что вы делаете', 'какие услуги': a question about what the salon does, without a service named."""
    return any(t.any(("что", "какой", "услуга", "процедура")) for t in tokens)


def _reminder(
    where: dict[str, set[int]], hits: list[Hit], negated: set[str], numbers: tuple[int, ...], named_time: bool
) -> None:
    """The answer to "1 — подтверждаю, 2 — отменить": confirm, cancel (asked back before it is done), a move, or
    something else. A bare "нет" beside "приду" is emphasis; "не получится, давайте в субботу" is a move."""
    if numbers == (1,):
        where["confirm"] = {0}
    elif numbers == (2,):
        where["cancel"] = {0}
    explicit_cancel = any(h.intent == "cancel" and not h.negated for h in hits)
    if explicit_cancel and named_time and "confirm" not in where:
        where["reschedule"] = where.pop("cancel", {0})
        explicit_cancel = False
    positive = "confirm" in where or "ack" in where or "cancel" in negated
    if positive and not explicit_cancel and "reschedule" not in where:
        where.setdefault("confirm", where.get("ack", {0}))
        where.pop("no", None)
        where.pop("ack", None)
    elif "no" in where or ("yes" in where and explicit_cancel):
        where.setdefault("cancel", where.get("no", {0}))
    where.pop("yes", None)
    where.pop("no", None)
    if explicit_cancel or "reschedule" in where:
        where.pop("confirm", None)
    if "confirm" in where:
        where.pop("book", None)  # "подтверждаю запись"


def _question(where: dict[str, set[int]], negated: set[str], numbers: tuple[int, ...], words: list[str]) -> None:
    """The answer to a yes-or-no question ("Отменить запись …? 1 — да, 2 — нет"): any "no" wins."""
    if numbers == (1,) and len(words) == 1:
        where["yes"] = {0}
    elif numbers == (2,) and len(words) == 1:
        where["no"] = {0}
    if "cancel" in negated or "yes" in negated:
        where.setdefault("no", {0})
    if "no" in where:
        where.pop("yes", None)
        where.pop("cancel", None)
    elif "cancel" in where and "yes" not in where:
        where["yes"] = where.pop("cancel")
    else:
        where.pop("cancel", None)
