"""What PostgreSQL can hold, decided before a value reaches it.

Input that passes a type check can still be refused by the database: `text` and `jsonb` refuse a NUL
character and a lone UTF-16 surrogate, `jsonb` refuses NaN and Infinity, `bigint` ends at 2^63 - 1, and
Python's own `str(int)` refuses more than 4,300 digits. These helpers name each problem (never repeating the
value, which may be personal data) and, for the dead-letter path that must never fail, turn anything into a
value jsonb accepts, with a note of every change.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BIGINT_MAX = 2**63 - 1
NUL = "\x00"
MAX_DEPTH = 32  # deeper nesting is kept as text: jsonb and Python's recursion both have limits
MAX_INT_BITS = 2**12  # about 1,200 digits: beyond it an int is kept as a note, not converted to text


def text_problem(value: str) -> str | None:
    """Why PostgreSQL would refuse this string, or None when it can be stored as it is."""
    if NUL in value:
        return "contains a NUL character"
    if _has_surrogate(value):
        return "contains a lone UTF-16 surrogate"
    return None


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def clean_text(value: str) -> tuple[str, list[str]]:
    """The string with NUL removed and lone surrogates replaced by U+FFFD, and a note per kind of change."""
    notes = []
    if NUL in value:
        notes.append(f"removed {value.count(NUL)} NUL character(s)")
        value = value.replace(NUL, "")
    if _has_surrogate(value):
        replaced = sum(1 for char in value if _is_surrogate(char))
        notes.append(f"replaced {replaced} lone UTF-16 surrogate(s) with U+FFFD")
        value = "".join("\ufffd" if _is_surrogate(char) else char for char in value)
    return value, notes


def _is_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udfff"


def is_bigint_id(value: object) -> bool:
    """A positive id a bigint column can hold (bool is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= BIGINT_MAX


@dataclass
class JsonSafe:
    """Turns any Python value into one jsonb accepts, bounded in size, noting each change it made."""

    max_string: int = 100_000
    max_items: int = 10_000
    budget: int = 2_000_000  # characters of kept text in all; the rest is dropped with a note
    notes: list[str] = field(default_factory=list)

    def convert(self, value: Any, path: str = "$", depth: int = 0) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return self._int(value, path)
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            self._note(path, f"non-finite number {value!r} kept as text")
            return repr(value)
        if isinstance(value, str):
            return self._text(value, path)
        if isinstance(value, bytes | bytearray | memoryview):
            return self._bytes(bytes(value), path)
        if depth >= MAX_DEPTH:
            self._note(path, f"nested deeper than {MAX_DEPTH} levels, kept as text")
            return self._text(_short_repr(value), path)
        if isinstance(value, Mapping):
            return self._mapping(value, path, depth)
        if isinstance(value, list | tuple | set | frozenset):
            return self._sequence(list(value), path, depth)
        self._note(path, f"{type(value).__name__} kept as its repr")
        return self._text(_short_repr(value), path)

    def _note(self, path: str, what: str) -> None:
        if len(self.notes) < 100:
            self.notes.append(f"{path}: {what}")

    def _int(self, value: int, path: str) -> int | str:
        if value.bit_length() > MAX_INT_BITS:
            self._note(path, f"integer of {value.bit_length()} bits dropped")
            return f"<integer of {value.bit_length()} bits>"
        return value

    def _text(self, value: str, path: str) -> str:
        value, changes = clean_text(value)
        for change in changes:
            self._note(path, change)
        limit = min(self.max_string, max(self.budget, 0))
        if len(value) > limit:
            self._note(path, f"truncated from {len(value)} characters")
            value = value[:limit] + f"… [truncated from {len(value)} characters]"
        self.budget -= len(value)
        return value

    def _bytes(self, value: bytes, path: str) -> str:
        try:
            return self._text(value.decode("utf-8"), path)
        except UnicodeDecodeError:
            self._note(path, "bytes that are not UTF-8, kept as base64")
            return self._text(base64.b64encode(value).decode("ascii"), path)

    def _mapping(self, value: Mapping[Any, Any], path: str, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for count, (key, item) in enumerate(value.items()):
            if count >= self.max_items:
                self._note(path, f"kept the first {self.max_items} of {len(value)} keys")
                break
            name = self._text(key if isinstance(key, str) else _short_repr(key), path)
            result[name] = self.convert(item, f"{path}.{name[:40]}", depth + 1)
        return result

    def _sequence(self, value: list[Any], path: str, depth: int) -> list[Any]:
        if len(value) > self.max_items:
            self._note(path, f"kept the first {self.max_items} of {len(value)} items")
        return [self.convert(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value[: self.max_items])]


def _short_repr(value: object) -> str:
    try:
        return repr(value)[:1000]
    except Exception as exc:  # noqa: BLE001  (a hostile __repr__ must not stop a dead letter)
        return f"<{type(value).__name__}, repr failed: {type(exc).__name__}>"
