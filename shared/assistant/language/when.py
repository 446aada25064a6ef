"""Days and times as clients say them: "завтра", "в пт", "в субботку", "5-го", "через 3 дня", "через неделю в
среду", "на выходных", "в 5" (17:00: a salon's day), "часиков в 7 вечера", "полпятого", "после обеда",
"ближе к вечеру", "после работы", "на полчаса раньше".

Rules over tokens, in this module; words that are not days or times are left alone. dateparser reads what
the rules do not (a month with a year, say), only when a day word is there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from dateparser.search import search_dates

from shared.assistant.language.tokens import Token

WEEKDAYS = {
    "понедельник": 0, "понедельничек": 0, "вторник": 1, "вторничек": 1, "среда": 2, "четверг": 3,
    "четвержок": 3, "пятница": 4, "пятничка": 4, "суббота": 5, "субботка": 5, "субботочка": 5,
    "воскресенье": 6, "воскресение": 6, "воскресеньице": 6,
}  # fmt: skip
MONTHS = {
    "январь": 1, "февраль": 2, "март": 3, "апрель": 4, "май": 5, "июнь": 6, "июль": 7, "август": 8,
    "сентябрь": 9, "октябрь": 10, "ноябрь": 11, "декабрь": 12,
}  # fmt: skip
CARDINALS = {
    "один": 1, "два": 2, "три": 3, "четыре": 4, "пять": 5, "шесть": 6, "семь": 7, "восемь": 8, "девять": 9,
    "десять": 10, "одиннадцать": 11, "двенадцать": 12, "пара": 2, "час": 1,
}  # fmt: skip
ORDINALS = {
    "первый": 1, "второй": 2, "третий": 3, "четвертый": 4, "пятый": 5, "шестой": 6, "седьмой": 7, "восьмой": 8,
    "девятый": 9, "десятый": 10, "одиннадцатый": 11, "двенадцатый": 12, "тринадцатый": 13, "четырнадцатый": 14,
    "пятнадцатый": 15, "шестнадцатый": 16, "семнадцатый": 17, "восемнадцатый": 18, "девятнадцатый": 19,
    "двадцатый": 20, "тридцатый": 30,
}  # fmt: skip
TENS = {"двадцать": 20, "тридцать": 30}
CLOCK = re.compile(r"^(\d{1,2})[:.\-](\d{2})$")
NUMERIC_DATE = re.compile(r"^(\d{1,2})[./](\d{1,2})(?:[./](\d{2,4}))?$")
DAY_OF_MONTH = re.compile(r"^(\d{1,2})-?(?:е|го|ое|ого|м|му|ому|ее)$")
HOUR_CUES = frozenset({"в", "к", "на", "около", "час", "часик", "после", "до", "с", "раньше", "позже", "между", "и",
                       "где-то", "примерно", "часов", "часиков", "часа", "часика", "район"})  # fmt: skip
CASE_ENDED_NUMBER = re.compile(r"^(\d{1,2})-?(?:х|ти|ми|ух|ех|ем|ью)$")  # "в районе 3х", "к 5ти"
NOT_AN_HOUR_AFTER = frozenset({"минута", "день", "неделя", "число", "месяц", "год", "рука", "человек", "раз",
                               "услуга", "процедура", "рубль", "тысяча", "р", "руб", *MONTHS})  # fmt: skip
SPAN_WORDS = {"или", "либо"}


@dataclass(frozen=True)
class When:
    """What the message says of days and times; empty fields were not said."""

    day: date | None = None
    last_day: date | None = None  # a span: "на выходных", "в пятницу или субботу"
    at: time | None = None
    after: time | None = None
    before: time | None = None
    shift_minutes: int | None = None  # "на полчаса раньше": -30
    from_day: date | None = None  # "с пятницы на понедельник": the day moved from

    @property
    def anything(self) -> bool:
        return any(
            value is not None
            for value in (self.day, self.at, self.after, self.before, self.shift_minutes, self.last_day)
        )


def _number(token: Token) -> int | None:
    if token.is_number:
        return int(token.text)
    for lemma in token.lemmas:
        if lemma in CARDINALS:
            return CARDINALS[lemma]
    return None


def _ordinal(tokens: list[Token], i: int) -> tuple[int, int] | None:
    """(value, tokens used) of an ordinal in words at i: "пятого", "двадцать пятого"."""
    token = tokens[i]
    tens = next((TENS[lemma] for lemma in token.lemmas if lemma in TENS), None)
    if tens is not None and i + 1 < len(tokens):
        unit = next((ORDINALS[lemma] for lemma in tokens[i + 1].lemmas if lemma in ORDINALS), None)
        if unit is not None and unit < 10:
            return tens + unit, 2
    value = next((ORDINALS[lemma] for lemma in token.lemmas if lemma in ORDINALS), None)
    return (value, 1) if value is not None else None


def _hour(value: int, qualifier: set[str]) -> time | None:
    """An hour as a salon means it: "в 5" is 17:00, "в 10" is 10:00; "утра", "дня", "вечера" decide."""
    if not 0 <= value <= 24:
        return None
    if value == 24:
        return None
    if qualifier & {"вечер", "ночь"} and value < 12:
        value += 12
    elif "день" in qualifier and value < 12 and value != 12:
        value += 12 if value <= 7 else 0
    elif not qualifier & {"утро"} and 1 <= value <= 8:
        value += 12
    return time(value, 0)


def _month_day(today: date, day: int, month: int | None = None, year: int | None = None) -> date | None:
    """A day of the month from today on: this month or the next (this year or the next, with a month)."""
    try:
        if month is None:
            candidate = date(today.year, today.month, day)
            if candidate < today:
                following = today.replace(day=1) + timedelta(days=32)
                candidate = date(following.year, following.month, day)
            return candidate
        if year is not None:
            return date(year if year > 100 else 2000 + year, month, day)
        candidate = date(today.year, month, day)
        return candidate if candidate >= today else date(today.year + 1, month, day)
    except ValueError:
        return None


class _Reader:
    def __init__(self, tokens: list[Token], today: date) -> None:
        self.tokens = tokens
        self.words = [t.text for t in tokens]
        self.today = today
        self.days: list[tuple[int, date]] = []  # (token index, day)
        self.span: tuple[date, date] | None = None
        self.at: list[tuple[int, time]] = []
        self.after: time | None = None
        self.before: time | None = None
        self.shift: int | None = None
        self.used: set[int] = set()

    def lemma(self, i: int, *words: str) -> bool:
        return 0 <= i < len(self.tokens) and self.tokens[i].any(words)

    def text(self, i: int, *words: str) -> bool:
        return 0 <= i < len(self.tokens) and self.words[i] in words

    def near_before(self, i: int, words: tuple[str, ...], distance: int = 2) -> bool:
        return any(self.lemma(j, *words) for j in range(max(0, i - distance), i))

    # ---- days ----------------------------------------------------------------------------------------
    def read_days(self) -> None:
        weeks_ahead = self._weeks_ahead()
        for i, token in enumerate(self.tokens):
            if token.any(("сегодня", "сейчас")) and not self.text(i, "сейчас"):
                self.days.append((i, self.today))
            elif token.any(("завтра", "завтрашний")) and not self.lemma(i - 1, "после"):
                self.days.append((i, self.today + timedelta(days=1)))
            elif token.any(("послезавтра",)) or (token.any(("завтра",)) and self.lemma(i - 1, "после")):
                self.days.append((i, self.today + timedelta(days=2)))
            elif (weekday := self._weekday(token)) is not None:
                self.days.append((i, self._weekday_date(i, weekday, weeks_ahead)))
            elif token.any(("через",)):
                self._after_a_while(i)
            elif token.any(("выходной", "выходные")) and self.near_before(i, ("на", "в", "этот", "эти", "ближайший")):
                saturday = self.today + timedelta(days=(5 - self.today.weekday()) % 7)
                if self.today.weekday() == 6:
                    saturday = self.today
                self.span = (max(saturday, self.today), saturday + timedelta(days=1 if saturday.weekday() == 5 else 0))
            elif token.any(("неделя",)) and not self.lemma(i - 1, "через", "два", "2", "пара", "один", "1"):
                self._week(i)
            else:
                self._calendar_day(i)

    def _is_day_word(self, i: int) -> bool:
        token = self.tokens[i]
        return self._weekday(token) is not None or token.any(("сегодня", "завтра", "послезавтра"))

    def _weekday(self, token: Token) -> int | None:
        for lemma in token.lemmas:
            if lemma in WEEKDAYS:
                return WEEKDAYS[lemma]
        return None

    def _weeks_ahead(self) -> int:
        """'через неделю в среду', 'в среду через неделю': the weekday a week or more away."""
        for i, token in enumerate(self.tokens):
            if token.any(("через",)) and self.lemma(i + 1, "неделя"):
                return 1
            if token.any(("через",)) and self.lemma(i + 2, "неделя"):
                return _number(self.tokens[i + 1]) or 1
        return 0

    def _weekday_date(self, i: int, weekday: int, weeks_ahead: int) -> date:
        today = self.today
        ahead = (weekday - today.weekday()) % 7
        if self.near_before(i, ("следующий",), 3) or self.near_before(i, ("неделя",), 3):
            monday = today - timedelta(days=today.weekday()) + timedelta(days=7)
            return monday + timedelta(days=weekday)
        if weeks_ahead:
            first = today + timedelta(days=7 * weeks_ahead)
            return first + timedelta(days=(weekday - first.weekday()) % 7)
        if ahead == 0 and not self.near_before(i, ("этот", "сегодня"), 3):
            ahead = 7  # "в среду", said on a Wednesday: the next one (today would be "сегодня")
        return today + timedelta(days=ahead)

    def _after_a_while(self, i: int) -> None:
        if self.lemma(i + 1, "день") and not self.lemma(i + 1, "два"):
            self.days.append((i, self.today + timedelta(days=2)))  # "через день"
            return
        weekday_named = any(self._weekday(t) is not None for t in self.tokens)  # "через неделю в среду"
        if self.lemma(i + 1, "неделя"):
            if not weekday_named:
                self.days.append((i, self.today + timedelta(days=7)))
            return
        if i + 2 < len(self.tokens) and (count := _number(self.tokens[i + 1])) is not None:
            if self.lemma(i + 2, "день") and count < 60:
                self.days.append((i, self.today + timedelta(days=count)))
            elif self.lemma(i + 2, "неделя") and count < 9 and not weekday_named:
                self.days.append((i, self.today + timedelta(days=7 * count)))

    def _week(self, i: int) -> None:
        monday = self.today - timedelta(days=self.today.weekday())
        if self.near_before(i, ("следующий",), 2):
            self.span = (monday + timedelta(days=7), monday + timedelta(days=13))
        elif self.near_before(i, ("этот", "на"), 2) and not any(self._weekday(t) is not None for t in self.tokens):
            self.span = (self.today, monday + timedelta(days=6))

    def _calendar_day(self, i: int) -> None:
        word = self.words[i]
        month = self._month_at(i + 1)
        if match := NUMERIC_DATE.match(word):
            if not CLOCK.match(word) or (int(match.group(2)) <= 12 and not self._clock_context(i)):
                day = _month_day(self.today, int(match.group(1)), int(match.group(2)), _int(match.group(3)))
                if day is not None:
                    self.days.append((i, day))
                    self.used.add(i)
            return
        if match := DAY_OF_MONTH.match(word):
            if (day := _month_day(self.today, int(match.group(1)), month)) is not None:
                self.days.append((i, day))
            return
        if word.isdigit() and 1 <= int(word) <= 31 and (month is not None or self.lemma(i + 1, "число")):
            if (day := _month_day(self.today, int(word), month)) is not None:
                self.days.append((i, day))
                self.used.add(i)
            return
        ordinal = _ordinal(self.tokens, i) if self.tokens[i].is_word else None
        if ordinal is None or self.lemma(i - 1, "пол", "половина"):
            return
        value, length = ordinal
        following = self._month_at(i + length)
        if following is not None or self.lemma(i + length, "число") or self.near_before(i, ("на", "к", "до", "с")):
            if self.lemma(i - 1, "час", "часик") or self._is_option_pick(i):
                return
            if (day := _month_day(self.today, value, following)) is not None:
                self.days.append((i, day))

    def _is_option_pick(self, i: int) -> bool:
        return self.lemma(i + 1, "вариант", "окно", "время", "слот")

    def _month_at(self, i: int) -> int | None:
        if 0 <= i < len(self.tokens):
            for lemma in self.tokens[i].lemmas:
                if lemma in MONTHS:
                    return MONTHS[lemma]
        return None

    def _clock_context(self, i: int) -> bool:
        return self.lemma(i - 1, "в", "к", "около", "после", "до", "с")

    # ---- times ---------------------------------------------------------------------------------------
    def read_times(self) -> None:
        for i, token in enumerate(self.tokens):
            if i in self.used:
                continue
            word = self.words[i]
            if match := CLOCK.match(word):
                if NUMERIC_DATE.match(word) and int(match.group(2)) <= 12 and not self._clock_context(i):
                    continue
                hour, minute = int(match.group(1)), int(match.group(2))
                if hour < 24 and minute < 60:
                    self._place(i, time(hour, minute))
            elif token.any(("пол", "половина")) and i + 1 < len(self.tokens):
                ordinal = _ordinal(self.tokens, i + 1)
                if ordinal is not None and 1 <= ordinal[0] <= 12:
                    hour = _hour(ordinal[0] - 1, self._qualifier(i + 1 + ordinal[1]))
                    if hour is not None:
                        self._place(i, hour.replace(minute=30))
            elif token.any(("полдень",)):
                self._place(i, time(12, 0))
            elif (value := self._hour_number(i)) is not None:
                hour = _hour(value, self._qualifier(i + 1))
                if hour is not None:
                    self._place(i, hour)
        self._parts_of_day()
        self._shift()

    def _hour_number(self, i: int) -> int | None:
        token = self.tokens[i]
        if token.is_number:
            value = int(token.text)
        elif match := CASE_ENDED_NUMBER.match(token.text):
            value = int(match.group(1))
        elif token.any(CARDINALS) and not token.any(("один", "пара")):
            value = _number(token)
            if token.any(("час",)) and not self.lemma(i - 1, "в", "к", "около"):
                return None  # "час" counts as 1 only in "в час"
        else:
            return None
        if value is None or value > 23 or self.lemma(i + 1, *NOT_AN_HOUR_AFTER) or self.lemma(i - 1, "через"):
            return None
        if self.lemma(i - 1, "минута") or self.lemma(i - 2, "минута"):
            return None  # "опоздаю минут на 20": a length, not an hour
        if self.lemma(i - 1, "на") and self.lemma(i - 2, "час"):
            return None  # "часа на два попозже" (but "часа в три" is three o'clock)
        if self.lemma(i - 1, "на") and any(
            self.lemma(j, "раньше", "позже", "пораньше", "попозже", "позднее") for j in (i + 1, i + 2)
        ):
            return None  # "на 2 часа позже" moves by two hours
        cue = self.lemma(i - 1, *HOUR_CUES) or self.lemma(i + 1, "час", "часик", "ч", "утро", "вечер")
        if not cue and token.is_number and 7 <= value <= 21 and i > 0 and self._is_day_word(i - 1):
            cue = True  # "маник пт 18": an hour right after the day
        if not cue or (not token.is_word and self.lemma(i + 1, "+")) or self.lemma(i - 1, "+"):
            return None
        return value

    def _qualifier(self, i: int) -> set[str]:
        found = set()
        for j in (i, i + 1):
            if 0 <= j < len(self.tokens):
                if self.words[j] in ("утра",):
                    found.add("утро")
                elif self.words[j] in ("дня",):
                    found.add("день")
                elif self.words[j] in ("вечера",):
                    found.add("вечер")
                elif self.words[j] in ("ночи",):
                    found.add("ночь")
        return found

    def _place(self, i: int, moment: time) -> None:
        """An hour said after "после/с/не раньше" opens a window, after "до/не позже" closes one, else is the time."""
        j = i - 1
        while j >= 0 and self.tokens[j].any(("часов", "час", "часик", "где-то", "примерно", "около")):
            j -= 1
        before = self.words[j] if j >= 0 else ""
        negated = j >= 1 and self.words[j - 1] == "не"
        if before in ("после", "позже", "позднее") or (before == "раньше" and negated) or before == "с":
            self.after = moment
        elif before in ("до", "раньше") or (before in ("позже", "позднее") and negated):
            self.before = moment
        elif before == "между":
            self.after = moment
        elif before == "и" and self.after is not None:  # "между 12 и 15"
            self.before = moment
        else:
            self.at.append((i, moment))

    def _parts_of_day(self) -> None:
        words = self.words
        for i, word in enumerate(words):
            after = before = None
            if word in ("утром", "утречком", "утро", "утречко", "утреца") or (
                word == "утра" and (self.lemma(i - 1, "с") or self.lemma(i - 2, "с"))
            ):
                before = time(12, 0)
            elif word in ("днем", "днём"):
                after, before = time(12, 0), time(17, 0)
            elif word in ("вечером", "вечерком", "вечерочком") or (word == "вечер" and self.lemma(i - 1, "на")):
                after = time(17, 0)
            elif (word == "вечеру" and self.lemma(i - 1, "к") and self.lemma(i - 2, "ближе", "поближе")) or (
                word == "вечер" and self.lemma(i - 1, "под")
            ):
                after = time(16, 0)
            elif self.lemma(i, "обед", "обеденный"):
                if self.lemma(i - 1, "после"):
                    after = time(13, 0)
                elif self.lemma(i - 1, "к", "в", "на") or self.lemma(i, "обеденный"):
                    after, before = time(12, 0), time(14, 0)
                elif self.lemma(i - 1, "до"):
                    before = time(12, 0)
            elif self.lemma(i, "половина") and self.lemma(i - 1, "первый") and self.lemma(i + 1, "день"):
                before = time(13, 0)
            elif self.lemma(i, "половина") and self.lemma(i - 1, "второй") and self.lemma(i + 1, "день"):
                after = time(13, 0)
            elif self.lemma(i, "работа") and self.lemma(i - 1, "после"):
                after = time(18, 0)
            elif self.lemma(i, "работа") and self.lemma(i - 1, "до"):
                before = time(10, 0)
            elif self.lemma(i, "школа", "учеба", "урок", "пара", "сад", "садик", "институт", "универ") and self.lemma(
                i - 1, "после"
            ):
                after = time(15, 0)
            if after is not None and self.after is None:
                self.after = after
            if before is not None and self.before is None:
                self.before = before

    def _shift(self) -> None:
        """A move by a length of time: "на полчаса раньше", "на час попозже", "на 15 минут позже", "на пару часов
        пораньше", "часа на два попозже", "на пол часа раньше"."""
        direction = next(
            (i for i, t in enumerate(self.tokens) if t.any(("раньше", "пораньше", "позже", "попозже", "позднее"))),
            None,
        )
        if direction is None:
            return
        sign = -1 if self.tokens[direction].any(("раньше", "пораньше")) else 1
        start = max(0, direction - 5)
        window = self.tokens[start : min(len(self.tokens), direction + 5)]
        minutes = None
        for j, part in enumerate(window):
            before = window[j - 1] if j else None
            after = window[j + 1] if j + 1 < len(window) else None
            if part.text.startswith("полчас") or (part.any(("час",)) and before is not None and before.text == "пол"):
                minutes = 30
            elif part.any(("полтора",)) and after is not None and after.any(("час",)):
                minutes = 90
            elif part.any(("час", "часик")) and minutes is None:
                count = _number(before) if before is not None and before.text != "час" else None
                if count is None and after is not None and after.text == "на" and j + 2 < len(window):
                    count = _number(window[j + 2])  # "часа на два"
                minutes = 60 * (count or 1)
            elif part.any(("минута", "минутка")):
                count = _number(before) if before is not None else None
                if count is None and after is not None and after.text == "на" and j + 2 < len(window):
                    count = _number(window[j + 2])  # "минут на 20"
                minutes = count or minutes
        if minutes:
            self.shift = sign * minutes


def _int(text: str | None) -> int | None:
    return int(text) if text else None


DAY_HINT = re.compile(r"январ|феврал|март|апрел|ма[яй]|июн|июл|август|сентябр|октябр|ноябр|декабр")


def read_when(tokens: list[Token], text: str, today: date, *, use_dateparser: bool = True) -> When:
    reader = _Reader(tokens, today)
    reader.read_days()
    reader.read_times()
    day = last_day = from_day = None
    if reader.span is not None and not reader.days:
        day, last_day = reader.span
    elif reader.days:
        ordered = sorted(reader.days)
        day = ordered[-1][1]
        between = set(reader.words[ordered[0][0] : ordered[-1][0]])
        if len(ordered) > 1 and between & SPAN_WORDS:
            day, last_day = min(d for _, d in ordered), max(d for _, d in ordered)
        elif len(ordered) > 1 and reader.lemma(ordered[0][0] - 1, "с") and ordered[0][1] != day:
            from_day = ordered[0][1]
    elif use_dateparser and DAY_HINT.search(text):
        day = _dateparser_day(text, today)
    at = reader.at[-1][1] if reader.at else None
    before = reader.before
    if reader.after is not None and before is not None and before <= reader.after:
        before = None  # "ближе к вечеру, а то я работаю до четырёх": an empty window means "до" was context
    return When(day, last_day, at, reader.after, before, reader.shift, from_day)


def _dateparser_day(text: str, today: date) -> date | None:
    base = datetime.combine(today, time(12, 0))
    found = search_dates(
        text,
        languages=["ru"],
        settings={"PREFER_DATES_FROM": "future", "RELATIVE_BASE": base, "DATE_ORDER": "DMY"},
    )
    for _, moment in found or []:
        if moment.date() >= today:
            return moment.date()
    return None
