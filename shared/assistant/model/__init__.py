"""The language-model assistant (`FLEET_ASSISTANT=shared.assistant.model:ModelAssistant`, in assistant.py).

Loaded on first use: the health report and every worker type read the model's figures (ledger.py), and only
the inbound workers of a fleet that uses the model need the openai client and the dialog behind it.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "ModelAssistant":
        from shared.assistant.model.assistant import ModelAssistant

        return ModelAssistant
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
