"""The chat assistant interface: one turn in, one reply and the new dialog state out.

The built-in assistant is rule-based and needs no network; another one (for example backed by a language
model) is plugged in with `FLEET_ASSISTANT=package.module:ClassName`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.assistant.tools import SalonTools


@dataclass(frozen=True)
class Turn:
    """One client message with everything the assistant may need to answer it."""

    company: dict[str, Any]
    client: dict[str, Any]
    text: str
    media: dict[str, Any] | None
    state: str
    data: dict[str, Any]
    now: datetime


@dataclass(frozen=True)
class Reply:
    text: str
    state: str = "idle"
    data: dict[str, Any] = field(default_factory=dict)


class Assistant(Protocol):
    def reply(self, turn: Turn, tools: SalonTools) -> Reply: ...


class AssistantConfigError(RuntimeError):
    """FLEET_ASSISTANT does not name an importable assistant class."""


def load_assistant(path: str) -> Assistant:
    module_name, _, class_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise AssistantConfigError(f"FLEET_ASSISTANT={path!r} is not an importable module:Class") from exc
    return cls()
