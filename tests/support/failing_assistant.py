"""An assistant that fails on one kind of message, as a buggy plug-in would."""

from __future__ import annotations

from shared.assistant import Reply, Turn
from shared.assistant.rules import RuleBasedAssistant
from shared.assistant.tools import SalonTools

POISON = "💥"


class FailingAssistant(RuleBasedAssistant):
    def reply(self, turn: Turn, tools: SalonTools) -> Reply:
        if POISON in turn.text:
            raise RuntimeError("the assistant cannot handle this message")
        return super().reply(turn, tools)
