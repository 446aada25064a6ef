"""Tokens with their dictionary forms: pymorphy3 gives every lemma a word may have ("стали": сталь, стать),
and a word the dictionary does not know ("записатся", "педекюр", "зафтра") takes the lemmas of the closest
word of the assistant's vocabulary (rapidfuzz), when one is close enough."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache

import pymorphy3
from rapidfuzz import fuzz, process

TOKEN = re.compile(
    r"\d{1,2}[:.\-]\d{2}(?![\d.])"  # 15:00, 14.30, 15-30
    r"|\d{1,2}[./]\d{1,2}(?:[./]\d{2,4})?"  # 03.12, 15/12, 03.12.2026
    r"|\d+(?:-?[а-я]{1,3}\b)?"  # 5, 5е, 31го, 9-е
    r"|[а-яa-z]+"
    r"|[+?,!;]"
)


@dataclass(frozen=True)
class Token:
    text: str
    lemmas: frozenset[str]
    corrected: bool = False

    @property
    def is_word(self) -> bool:
        return self.text[0].isalpha()

    @property
    def is_number(self) -> bool:
        return self.text.isdigit()

    def any(self, words: Iterable[str]) -> bool:
        return not self.lemmas.isdisjoint(words)


@cache
def morph() -> pymorphy3.MorphAnalyzer:
    """One analyser per process (its dictionaries take about 15 MB and 0.1 s to load)."""
    return pymorphy3.MorphAnalyzer()


@lru_cache(maxsize=50_000)
def lemmas_of(word: str) -> frozenset[str]:
    return frozenset({word, *(parse.normal_form.replace("ё", "е") for parse in morph().parse(word))})


@lru_cache(maxsize=50_000)
def lemma_of(word: str) -> str:
    """The most likely dictionary form of a word."""
    return morph().parse(word)[0].normal_form.replace("ё", "е")


def forms_of(word: str) -> set[str]:
    """Every inflected form of a word ("перенести": перенесите, перенесу, …): a typo of any of them is found."""
    forms = {word}
    for parse in morph().parse(word)[:1]:
        forms |= {form.word.replace("ё", "е") for form in parse.lexeme if len(form.word) >= 4}
    return forms


@lru_cache(maxsize=20_000)
def _known(word: str) -> bool:
    return morph().word_is_known(word)


def _cutoff(word: str) -> float:
    return 75.0 if len(word) <= 5 else 80.0


@dataclass(frozen=True, eq=False)
class Lexicon:
    """The words a typo may stand for; compared by identity, so caching a lookup does not hash every word."""

    words: tuple[str, ...]

    def __contains__(self, word: object) -> bool:
        return word in self._set

    @cached_property
    def _set(self) -> frozenset[str]:
        return frozenset(self.words)


@lru_cache(maxsize=20_000)
def _closest(word: str, lexicon: Lexicon) -> str | None:
    found = process.extractOne(word, lexicon.words, scorer=fuzz.ratio, score_cutoff=_cutoff(word))
    return found[0] if found else None


def tokenize(text: str, lexicon: Lexicon | None = None, *, correct: bool = True, lemmas: bool = True) -> list[Token]:
    """The normalised text's tokens; `lexicon` holds the words a typo may stand for.
    `lemmas=False` keeps each word as written (the benchmark's measure of what lemmas add)."""

    def forms(word: str) -> frozenset[str]:
        return lemmas_of(word) if lemmas else frozenset({word})

    lexicon = lexicon or Lexicon(())
    tokens = []
    for raw in TOKEN.findall(text):
        if not raw[0].isalpha() or len(raw) < 4 or not correct or _known(raw) or raw in lexicon:
            tokens.append(Token(raw, forms(raw) if raw[0].isalpha() else frozenset({raw})))
            continue
        closest = _closest(raw, lexicon)
        if closest is None:
            tokens.append(Token(raw, forms(raw)))
        else:
            tokens.append(Token(raw, forms(closest) | {raw}, corrected=True))
    return tokens
