"""An assistant that stalls on its first answer, so a test can kill the worker in the middle of a message (or
fill Redis up under it): 30 s, or `SLOW_ASSISTANT_SECONDS`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.assistant import Reply, Turn
from shared.assistant.rules import RuleBasedAssistant
from shared.assistant.tools import SalonTools


class SlowAssistant(RuleBasedAssistant):
    def reply(self, turn: Turn, tools: SalonTools) -> Reply:
        marker = Path(os.environ["SLOW_ASSISTANT_MARKER"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))  # tells the test which child to kill
            time.sleep(float(os.environ.get("SLOW_ASSISTANT_SECONDS", "30")))
        return super().reply(turn, tools)
