"""Which of the salon's services and masters a message names.

Services: the vocabulary's features (services.toml) give each of the salon's services a set of features from
its title, and each part of a message (split at "и", "+", commas) a set of features from the client's words;
the part names the services that have all of them. A part whose features no service has names a service the
salon does not offer ("наращивание ресниц" where there are none): said as such, never swapped for another.

Masters: a master is named by any form of their first name ("Леночка", "к Лене" for Елена), their surname, or a
nickname from the salon's settings; a name that fits none of the salon's masters after "к" or "мастер" is a
master who does not work here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from shared.assistant.language.tokens import Token, lemma_of, lemmas_of, tokenize
from shared.assistant.language.vocabulary import name_forms, service_words

SEPARATORS = frozenset({"и", ",", "+", "или", "плюс", "либо", ";"})
STOP_LEMMAS = frozenset({"в", "на", "с", "и", "для", "по", "от", "до", "под", "один", "два", "за", "или", "без", "из"})
MASTER_CUES = frozenset({"к", "у", "мастер", "мастерица", "с"})
MASTER_VERBS = frozenset({"работать", "принимать", "делать", "стричь"})  # "у вас Аня работает?"
SELF_CUES = frozenset({"это", "зовут", "звать"})


@dataclass(frozen=True)
class SalonService:
    id: int
    title: str
    features: frozenset[str]


@dataclass(frozen=True)
class SalonMaster:
    id: int
    name: str
    forms: frozenset[str]


@dataclass(frozen=True)
class Catalogue:
    """A salon's services and masters as the assistant reads them (built once per catalogue, then cached)."""

    services: tuple[SalonService, ...]
    masters: tuple[SalonMaster, ...]
    own_words: dict[tuple[str, ...], tuple[int, ...]] = field(default_factory=dict)  # salon phrase -> service ids
    title_words: frozenset[str] = frozenset()  # words of the salon's titles no feature covers
    lexicon: tuple[str, ...] = ()  # every word a typo may stand for, sorted


@dataclass(frozen=True)
class Services:
    """What the message names: candidate service ids per part, and parts no service fits."""

    parts: tuple[tuple[int, ...], ...] = ()
    missing: tuple[str, ...] = ()
    related: tuple[int, ...] = ()  # for the first part no service fits: the services nearest to it

    @property
    def ids(self) -> list[int]:
        seen: list[int] = []
        for part in self.parts:
            seen += [service_id for service_id in part if service_id not in seen]
        return seen


def _title_lemmas(title: str) -> set[str]:
    lemmas: set[str] = set()
    for token in tokenize(title.lower().replace("ё", "е"), correct=False):
        lemmas |= token.lemmas
    return lemmas


def _features_of(lemmas: set[str]) -> set[str]:
    return {name for name, feature in service_words().features.items() if feature.titles & lemmas}


@lru_cache(maxsize=256)
def _build(
    services: tuple[tuple[int, str, int | None], ...],
    staff: tuple[tuple[int, str], ...],
    own_words: tuple[tuple[str, tuple[int, ...]], ...],
    own_masters: tuple[tuple[str, int], ...],
    categories: tuple[tuple[int, str], ...],
) -> Catalogue:
    vocabulary = service_words()
    covered = set().union(*(feature.titles for feature in vocabulary.features.values()))
    category_titles = dict(categories)
    built, title_words = [], set()
    for service_id, title, category_id in services:
        lemmas = _title_lemmas(title)
        features = _features_of(lemmas)
        if not features and category_id in category_titles:
            features = _features_of(_title_lemmas(category_titles[category_id]))
        own = {lemma for lemma in lemmas - covered - STOP_LEMMAS if len(lemma) >= 4 and lemma.isalpha()}
        title_words |= own
        built.append(SalonService(service_id, title, frozenset(features | {f"word:{w}" for w in own})))
    forms = name_forms()
    masters = []
    for staff_id, name in staff:
        words = [word for word in name.lower().replace("ё", "е").split() if word.isalpha()]
        own_forms = set()
        if words:
            own_forms |= forms.get(words[0], {words[0]})
            own_forms |= {word for word in words[1:] if len(word) >= 4}
            own_forms |= {lemma for word in words[1:] for lemma in lemmas_of(word) if len(lemma) >= 4}
        own_forms |= {nick for nick, nick_staff in own_masters if nick_staff == staff_id}
        masters.append(SalonMaster(staff_id, name, frozenset(own_forms)))
    phrases = {tuple(lemma_of(t.text) for t in tokenize(phrase, correct=False)): ids for phrase, ids in own_words}
    lexicon = set(title_words) | {form for m in masters for form in m.forms}
    lexicon |= {w for p in phrases for w in p}
    return Catalogue(tuple(built), tuple(masters), phrases, frozenset(title_words), tuple(sorted(lexicon)))


def catalogue(
    services: Iterable[dict[str, Any]],
    staff: Iterable[dict[str, Any]],
    *,
    own_words: dict[str, list[int]] | None = None,
    own_masters: dict[str, int] | None = None,
    category_titles: Callable[[], dict[int, str]] | None = None,
) -> Catalogue:
    service_key = tuple((s["id"], s["title"], s.get("category_id")) for s in services)
    staff_key = tuple((m["id"], m["name"] or "") for m in staff)
    needs_categories = category_titles is not None and _untitled(tuple(title for _, title, _ in service_key))
    categories = tuple(sorted(category_titles().items())) if needs_categories and category_titles else ()
    return _build(
        service_key,
        staff_key,
        tuple(sorted((phrase.lower().replace("ё", "е"), tuple(ids)) for phrase, ids in (own_words or {}).items())),
        tuple(sorted((nick.lower().replace("ё", "е"), staff_id) for nick, staff_id in (own_masters or {}).items())),
        categories,
    )


@lru_cache(maxsize=256)
def _untitled(titles: tuple[str, ...]) -> bool:
    """Some title gives its service no feature: its category's title is read instead."""
    return any(not _features_of(_title_lemmas(title)) for title in titles)


# ---- services ----------------------------------------------------------------------------------------------
def _parts(tokens: list[Token]) -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    for token in tokens:
        if token.text in SEPARATORS:
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


def _phrase_at(part: list[Token], start: int, phrase: tuple[str, ...]) -> int | None:
    """The index after the phrase when it starts at `start` (one other word allowed between its words)."""
    i = start
    for n, lemma in enumerate(phrase):
        if i >= len(part):
            return None
        if lemma in part[i].lemmas:
            i += 1
            continue
        if n and i + 1 < len(part) and lemma in part[i + 1].lemmas:
            i += 2
            continue
        return None
    return i


@dataclass
class _Said:
    """What one part of a message says of services."""

    required: set[str] = field(default_factory=set)
    optional: set[str] = field(default_factory=set)
    excluded: set[str] = field(default_factory=set)  # "без покрытия"
    words: list[str] = field(default_factory=list)
    own: set[int] = field(default_factory=set)  # services the salon's own words name
    by_word: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)  # (position, features) per word


def _said(part: list[Token], known: Catalogue) -> _Said:
    vocabulary = service_words()
    said = _Said()
    covered: set[int] = set()
    for i in range(len(part)):
        for phrase, ids in known.own_words.items():
            end = _phrase_at(part, i, phrase)
            if end is not None:
                said.own |= set(ids)
                covered |= set(range(i, end))
        for phrase, names in vocabulary.phrases.items():
            end = _phrase_at(part, i, phrase)
            if end is not None:  # a phrase speaks for its words
                said.by_word.append((i, names))
                said.words += [t.text for t in part[i:end]]
                covered |= set(range(i, end))
    for i, token in enumerate(part):
        if i in covered:
            continue
        names = next((vocabulary.words[lemma] for lemma in token.lemmas if lemma in vocabulary.words), None)
        if names is None:
            own_title = token.lemmas & known.title_words
            names = tuple(f"word:{lemma}" for lemma in own_title) or None
        if names is not None:
            said.by_word.append((i, names))
            said.words.append(token.text)
    features = vocabulary.features
    cores = [i for i, names in said.by_word if any(_is_core(n, features) for n in names)]
    for i, names in said.by_word:
        if i and part[i - 1].text == "без":
            said.excluded |= {name.lstrip("~") for name in names}
            continue
        modifier_only = not any(_is_core(n, features) for n in names)
        companion = i > 0 and part[i - 1].text == "с"  # "мы с дочкой записаны": she comes along
        if modifier_only and cores and (companion or not any(abs(i - j) <= 4 for j in cores)):
            continue  # "у меня ребёнок заболел" far from "стрижка" narrows nothing
        _add(names, said.required, said.optional)
    said.optional -= said.required
    said.words = list(dict.fromkeys(said.words))
    return said


def _is_core(name: str, features: dict[str, Any]) -> bool:
    """A feature the word requires (not "~optional") and that is more than a modifier."""
    return not name.startswith("~") and not (name in features and features[name].modifier)


def _add(names: Iterable[str], required: set[str], optional: set[str]) -> None:
    for name in names:
        (optional if name.startswith("~") else required).add(name.lstrip("~"))


def _fitting(known: Catalogue, wanted: set[str], excluded: set[str] = frozenset()) -> tuple[int, ...]:  # type: ignore[assignment]
    features = service_words().features
    found = []
    for service in known.services:
        if not wanted <= service.features or service.features & excluded:
            continue
        unasked = {f for f in service.features - wanted if f in features and features[f].specific}
        if not unasked:
            found.append(service.id)
    return tuple(found)


def _resolve(known: Catalogue, said: _Said) -> tuple[int, ...]:
    features = service_words().features
    required, optional, excluded = said.required, said.optional, said.excluded
    core = {f for f in required if not (f in features and features[f].modifier)}
    return (
        _fitting(known, required | optional, excluded)
        or _fitting(known, required, excluded)
        or _fitting(known, core, excluded)
    )


def match_services(tokens: list[Token], known: Catalogue) -> Services:
    features = service_words().features
    parts: list[tuple[int, ...]] = []
    missing: list[str] = []
    related: tuple[int, ...] = ()
    previous_core: set[str] = set()
    for part in _parts(tokens):
        said = _said(part, known)
        if said.own:
            parts.append(tuple(s.id for s in known.services if s.id in said.own))
            continue
        core = {f for f in said.required if not (f in features and features[f].modifier)}
        if not core and said.required and previous_core:
            said.required |= previous_core  # "мужская стрижка и детская": the second is a haircut too
            core = set(previous_core)
        if not core:
            continue  # "мужа", "ребёнка" alone name nobody's service
        previous_core = core
        found = _resolve(known, said)
        procedures = [f for f in core if f in features and features[f].procedure]
        if not found and len(procedures) > 1:
            # "педикюр сразу после маникюра": two procedures no service combines are two services.
            alone = [_fitting(known, {name}, said.excluded) for name in procedures]
            if all(alone):
                parts += alone
                continue
        if found:
            parts.append(found)
        else:
            missing.append(" ".join(said.words))
            related = related or _nearest(known, core)
    return Services(tuple(parts), tuple(missing), related)


def _nearest(known: Catalogue, wanted: set[str]) -> tuple[int, ...]:
    """The services sharing the most of the features asked for ("наращивание ресниц": the lash services)."""
    shared = {service.id: len(service.features & wanted) for service in known.services}
    best = max(shared.values(), default=0)
    return tuple(service_id for service_id, count in shared.items() if best and count == best)


# ---- masters -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Masters:
    staff_id: int | None = None
    ambiguous: tuple[int, ...] = ()  # several masters fit the name said
    missing: str | None = None  # a name after "к"/"мастер" that no master of the salon has


def match_masters(tokens: list[Token], known: Catalogue) -> Masters:
    every_form = {form for forms in name_forms().values() for form in forms}
    named: list[int] = []
    missing = None
    for i, token in enumerate(tokens):
        if not token.is_word or len(token.text) < 3:
            continue
        if _introduces_self(tokens, i):
            continue  # "это Светлана", "меня зовут Оля": the client's own name
        fits = [m.id for m in known.masters if token.lemmas & m.forms]
        if fits:
            named += [staff_id for staff_id in fits if staff_id not in named]
            continue
        cue = (i and tokens[i - 1].any(MASTER_CUES)) or any(
            0 <= j < len(tokens) and tokens[j].any(MASTER_VERBS) for j in (i + 1, i + 2)
        )
        if cue and token.lemmas & every_form:
            missing = sorted(token.lemmas & every_form)[0]  # the name as said, in its plain form ("оля")
    if len(named) == 1:
        return Masters(named[0])
    if len(named) > 1:
        return Masters(None, tuple(named))
    return Masters(missing=missing)


def _introduces_self(tokens: list[Token], i: int) -> bool:
    return i > 0 and tokens[i - 1].any(SELF_CUES)
