"""The assistant's vocabulary, read once per process from the TOML files in `shared/assistant/vocabulary/`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DIRECTORY = Path(__file__).resolve().parent.parent / "vocabulary"


def _load(name: str) -> dict[str, Any]:
    with (DIRECTORY / f"{name}.toml").open("rb") as handle:
        return tomllib.load(handle)


@dataclass(frozen=True)
class Feature:
    name: str
    titles: frozenset[str]
    specific: bool
    modifier: bool
    procedure: bool


@dataclass(frozen=True)
class ServiceWords:
    features: dict[str, Feature]
    words: dict[str, tuple[str, ...]]
    phrases: dict[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class Part:
    """One word of a cue: any of its lemmas, or written forms ("=буду"); "^"/"$" tie a lemma to the message's
    first or last word."""

    lemmas: frozenset[str]
    forms: frozenset[str]
    first: frozenset[str]
    last: frozenset[str]
    both: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Part:
        lemmas, forms, first, last, both = set(), set(), set(), set(), set()
        for alternative in text.split("|"):
            opens, closes = alternative.startswith("^"), alternative.endswith("$") and len(alternative) > 1
            word = alternative.removeprefix("^").removesuffix("$") if closes else alternative.removeprefix("^")
            if word.startswith("=") and len(word) > 1:
                forms.add(word[1:])
            else:
                (both if opens and closes else first if opens else last if closes else lemmas).add(word)
        return cls(frozenset(lemmas), frozenset(forms), frozenset(first), frozenset(last), frozenset(both))

    @property
    def words(self) -> frozenset[str]:
        return self.lemmas | self.forms | self.first | self.last | self.both

    def matches(self, text: str, lemmas: frozenset[str], index: int, last: int) -> bool:
        if text in self.forms or not lemmas.isdisjoint(self.lemmas):
            return True
        if index == 0 and not lemmas.isdisjoint(self.first):
            return True
        if index == last and not lemmas.isdisjoint(self.last):
            return True
        return index == 0 == last and not lemmas.isdisjoint(self.both)


@dataclass(frozen=True)
class Cue:
    intent: str
    parts: tuple[Part, ...]
    topic: str | None
    context: str | None
    weak: bool
    alone: bool
    with_service: bool


@cache
def service_words() -> ServiceWords:
    data = _load("services")
    features = {
        name: Feature(
            name,
            frozenset(map(_plain, spec["titles"])),
            spec.get("specific", False),
            spec.get("modifier", False),
            spec.get("procedure", False),
        )
        for name, spec in data["feature"].items()
    }
    words = {_plain(word): tuple(names) for word, names in data["words"].items()}
    phrases = {tuple(_plain(phrase).split()): tuple(names) for phrase, names in data["phrases"].items()}
    for names in [*words.values(), *phrases.values()]:
        unknown = [name for name in names if name.lstrip("~") not in features]
        if unknown:
            raise ValueError(f"services.toml names undeclared features: {unknown}")
    return ServiceWords(features, words, phrases)


@cache
def cues() -> tuple[Cue, ...]:
    found = []
    for spec in _load("intents")["cue"]:
        for words in spec["words"]:
            parts = tuple(Part.parse(part) for part in _plain(words).split())
            found.append(
                Cue(
                    spec["intent"],
                    parts,
                    spec.get("topic"),
                    spec.get("context"),
                    spec.get("weak", False),
                    spec.get("alone", False),
                    spec.get("with_service", False),
                )
            )
    return tuple(found)


@cache
def name_forms() -> dict[str, frozenset[str]]:
    """Full first name -> its forms, the name itself included, lower case, ё as е."""
    return {
        _plain(name): frozenset({_plain(name), *(_plain(form) for form in forms)})
        for name, forms in _load("names")["names"].items()
    }


@cache
def chat_words() -> dict[str, str]:
    return {_plain(word): _plain(meaning) for word, meaning in _load("chat")["words"].items()}


@cache
def emoji_words() -> dict[str, str]:
    return dict(_load("chat")["emoji"])


@cache
def latin() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(sequences, letters, whole words) for reading Russian typed in Latin letters."""
    data = _load("latin")
    return data["sequences"], data["letters"], data["words"]


def _plain(text: str) -> str:
    return text.lower().replace("ё", "е")
