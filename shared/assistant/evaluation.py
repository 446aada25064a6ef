"""Scoring the understanding step on a corpus of client messages with the meaning each one has.

A corpus is a TOML file (tests/corpus/messages.toml is the project's; its README gives the fields). A message
counts as understood when every field of its meaning matches what `understand` reads, and nothing is read
that the meaning does not have. Used by the corpus test (a floor) and by `bench.assistant` (the figures).
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from shared.assistant.language.catalogue import Catalogue
from shared.assistant.understanding import Steps, Understanding, understand

CONTEXTS = {"idle": "idle", "reminder": "reminder", "slots": "slots", "cancel_question": "question"}


@dataclass(frozen=True)
class Expected:
    text: str
    context: str
    intents: frozenset[str]
    services: frozenset[str]
    missing_service: bool
    master: str | None
    missing_master: bool
    day: date | None
    last_day: date | None
    at: time | None
    after: time | None
    before: time | None
    shift: int | None
    topics: frozenset[str]
    pick: int | None


@dataclass(frozen=True)
class Corpus:
    today: date
    now: time
    messages: tuple[Expected, ...]
    offered: tuple[datetime, ...]


def load_corpus(path: Path) -> Corpus:
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    groups: dict[str, list[str]] = data.get("groups", {})

    def titles(names: list[str]) -> frozenset[str]:
        found: list[str] = []
        for name in names:
            found += groups[name[1:]] if name.startswith("@") else [name]
        return frozenset(found)

    def clock(value: str | None) -> time | None:
        return time.fromisoformat(value) if value else None

    messages = []
    for entry in data["message"]:
        days = entry.get("days") or [entry.get("day"), None]
        messages.append(
            Expected(
                text=entry["text"],
                context=entry.get("context", "idle"),
                intents=frozenset(entry["intents"]),
                services=titles(entry.get("service", [])),
                missing_service=entry.get("missing_service", False),
                master=entry.get("master"),
                missing_master=entry.get("missing_master", False),
                day=date.fromisoformat(days[0]) if days[0] else None,
                last_day=date.fromisoformat(days[1]) if days[1] else None,
                at=clock(entry.get("time")),
                after=clock(entry.get("after")),
                before=clock(entry.get("before")),
                shift=entry.get("shift"),
                topics=frozenset(entry.get("topics", [])),
                pick=entry.get("pick"),
            )
        )
    salon = data["salon"]
    offered = tuple(datetime.fromisoformat(s) for s in data.get("slots", {}).get("offered", []))
    return Corpus(date.fromisoformat(salon["today"]), time.fromisoformat(salon["now"]), tuple(messages), offered)


def differences(expected: Expected, got: Understanding, known: Catalogue) -> list[str]:
    """What the reading got wrong, field by field; empty when the message was understood."""
    titles = {s.id: s.title for s in known.services}
    masters = {m.id: m.name for m in known.masters}
    when = got.when
    pairs: list[tuple[str, Any, Any]] = [
        ("intents", sorted(expected.intents), sorted(set(got.intents))),
        ("service", sorted(expected.services), sorted(titles[i] for i in got.service_ids)),
        ("missing_service", expected.missing_service, got.missing_service is not None),
        ("master", expected.master, masters.get(got.staff_id) if got.staff_id is not None else None),
        ("missing_master", expected.missing_master, got.missing_master is not None),
        ("day", expected.day, when.day),
        ("last_day", expected.last_day, when.last_day),
        ("time", expected.at, when.at),
        ("after", expected.after, when.after),
        ("before", expected.before, when.before),
        ("shift", expected.shift, when.shift_minutes),
        ("topics", sorted(expected.topics), sorted(got.topics)),
        ("pick", expected.pick, got.pick),
    ]
    return [f"{name}: expected {want!r}, read {have!r}" for name, want, have in pairs if want != have]


@dataclass
class Score:
    total: int = 0
    understood: int = 0
    by_intent: Counter[str] = field(default_factory=Counter)
    understood_by_intent: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[Expected, list[str]]] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.understood / self.total if self.total else 0.0

    def intent_share(self, intent: str) -> float:
        return self.understood_by_intent[intent] / self.by_intent[intent] if self.by_intent[intent] else 0.0


def score(corpus: Corpus, known: Catalogue, steps: Steps = Steps()) -> Score:  # noqa: B008  (frozen)
    result = Score()
    for expected in corpus.messages:
        got = understand(
            expected.text, known, corpus.today, CONTEXTS[expected.context], list(corpus.offered), steps=steps
        )
        wrong = differences(expected, got, known)
        result.total += 1
        result.by_intent.update(expected.intents)
        if wrong:
            result.failures.append((expected, wrong))
        else:
            result.understood += 1
            result.understood_by_intent.update(expected.intents)
    return result
